//! One resource in the daemon: the engine and what it drives.
//!
//! The engine state ([`EngineState`]: the [`replication::Resource`] and a
//! table of connections) sits behind one lock, [`Events`]. Whoever has an event
//! for it — device I/O (the FUSE threads), disk completions (the disk threads),
//! connections and frames (the transport threads), commands (the control
//! socket), the 100 ms tick (the ticker thread) — takes the lock, hands the
//! event to the engine and carries out its actions in order, none of which
//! blocks on another thread. There is no engine thread to wake: with one, a
//! replicated 4 KiB write cost two more thread wake-ups on each node, and
//! wake-ups were the cost. Meta-data writes happen under the lock, because the
//! engine requires them to be stable before anything after them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use blockdev::FileDevice;
use bytes::Bytes;
use fuse::{DeviceMount, LoopDevice, LoopOptions, OpenGate, ServeOptions};
use replication::message::{encode_split, Message, Protocol};
use replication::{
    Action, Admin, AdminError, Config, ConnState, Event, IoError, Note, OnIoError, ReplState,
    Resource, Role, BLOCK_SIZE,
};

use crate::control::{PeerStatus, ResourceStatus};
use crate::device::{self, EngineDevice};
use crate::disk_queue::{DiskJob, DiskQueue, DiskSlot, DoneSink};
use crate::meta_store::{MetaStore, Opened, AL_EXTENT_BLOCKS};
use crate::spec::ResourceSpec;
use crate::transport::{Connection, Flushes, PeerLink, Transport};

const TICK: Duration = Duration::from_millis(100);

pub enum IoRequest {
    Read { block: u64, count: u64 },
    Write { block: u64, data: Bytes },
    Flush,
}

/// A device request's answer: the data read, if any, or why it failed.
pub type IoResult = Result<Option<Bytes>, IoError>;
/// Takes a device request's answer, on whichever thread completes it.
pub type IoReply = Box<dyn FnOnce(IoResult) + Send>;
pub type AdminReply = Sender<Result<(), String>>;

pub enum HostMsg {
    Io {
        request: IoRequest,
        reply: IoReply,
    },
    Admin {
        command: Admin,
        reply: AdminReply,
    },
    DiskDone {
        token: u64,
        result: Result<Option<Bytes>, ()>,
    },
    Connected {
        peer: u8,
        connection: Connection,
    },
    Frame {
        peer: u8,
        connection: u64,
        message: Message,
    },
    Lost {
        peer: u8,
        connection: u64,
    },
    Status {
        reply: Sender<ResourceStatus>,
    },
    /// Leave: persist clean meta-data if idle, and stop.
    Down {
        reply: Sender<Result<(), String>>,
    },
    /// `drbdadm attach` of a Diskless resource: the disk re-opened and its
    /// meta-data read.
    Attach {
        disk: Arc<FileDevice>,
        opened: Box<Opened>,
        reply: AdminReply,
    },
}

/// The engine behind its lock, as every thread with an event for it holds it.
/// Empty once the resource went down (or the engine panicked): events are then
/// refused, as a closed channel refused them.
#[derive(Clone)]
pub struct Events(Arc<Mutex<Option<EngineState>>>);

/// The engine has stopped.
#[derive(Debug)]
pub struct Stopped;

impl Events {
    /// Events of an engine that has already stopped (for tests).
    #[cfg(test)]
    pub fn stopped() -> Events {
        Events(Arc::new(Mutex::new(None)))
    }

    /// Carries out `msg` on the calling thread.
    pub fn send(&self, msg: HostMsg) -> Result<(), Stopped> {
        let Ok(mut guard) = self.0.lock() else {
            return Err(Stopped);
        };
        let Some(engine) = guard.as_mut() else {
            return Err(Stopped);
        };
        if let HostMsg::Down { reply } = msg {
            let result = engine.down();
            let effects = std::mem::take(&mut engine.effects);
            // Dropping the engine ends the disk threads (their job channel
            // closes) and the connections' writers.
            *guard = None;
            drop(guard);
            effects.run();
            let _ = reply.send(result);
            return Ok(());
        }
        engine.handle(msg);
        unlock_and_run_effects(guard);
        Ok(())
    }

    fn tick(&self) -> Result<(), Stopped> {
        let Ok(mut guard) = self.0.lock() else {
            return Err(Stopped);
        };
        let engine = guard.as_mut().ok_or(Stopped)?;
        let actions = engine.engine.handle(Event::Tick);
        engine.run_actions(actions);
        unlock_and_run_effects(guard);
        Ok(())
    }
}

/// Lets go of the engine's lock, then carries out what its run left to do.
fn unlock_and_run_effects(mut guard: std::sync::MutexGuard<'_, Option<EngineState>>) {
    let effects = guard
        .as_mut()
        .map(|engine| std::mem::take(&mut engine.effects))
        .unwrap_or_default();
    drop(guard);
    effects.run();
}

/// What one run of the engine leaves to do once its lock is let go: disk jobs
/// to submit, frames to write, requests to answer. Done under the lock, each
/// syscall there (the loopback peer's whole receive path runs inside our
/// `sendmsg`) made every other thread with an event wait.
#[derive(Default)]
struct Effects {
    disk: Option<Arc<DiskQueue>>,
    jobs: Vec<DiskJob>,
    flushes: Flushes,
    replies: Vec<(IoReply, IoResult)>,
}

impl Effects {
    fn run(self) {
        if let Some(disk) = self.disk {
            for job in self.jobs {
                disk.submit(job);
            }
        }
        self.flushes.run();
        for (reply, result) in self.replies {
            reply(result);
        }
    }
}

/// A running resource, as the daemon holds it.
pub struct ResourceHost {
    pub spec: ResourceSpec,
    events: Events,
    ticker: Option<JoinHandle<()>>,
    /// The transport's listener thread, if this node listens.
    listener: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    mount: Option<DeviceMount>,
    loop_device: Option<LoopDevice>,
    /// The resource as a block device (what FUSE and NBD serve).
    device: Arc<EngineDevice>,
    /// The NBD export, while there is one.
    nbd: Option<nbd::NbdServer>,
}

/// The engine's resync budget for a rate in bytes per second: what one tick
/// grants (a run larger than that leaves a debt later ticks pay off).
fn resync_budget_per_tick(rate: Option<u64>) -> Option<u64> {
    rate.map(|r| r.saturating_mul(TICK.as_millis() as u64) / 1000)
}

fn on_io_error_of(spec: &ResourceSpec) -> OnIoError {
    if spec.on_io_error_detach {
        OnIoError::Detach
    } else {
        OnIoError::PassOn
    }
}

/// The options of `spec` that `drbdadm adjust` changes on a running resource.
pub(crate) fn options_of(spec: &ResourceSpec) -> Admin {
    Admin::Options {
        resync_budget_per_tick: resync_budget_per_tick(spec.resync_rate),
        on_io_error: on_io_error_of(spec),
    }
}

/// The meta-data of `spec`'s backing `disk`, for `up` and `attach`.
fn open_meta(spec: &ResourceSpec, disk: &Arc<FileDevice>) -> Result<Opened, String> {
    let peers: Vec<u8> = spec.peers.iter().map(|p| p.node_id).collect();
    let opened = MetaStore::open(disk.clone(), spec.node_id, &peers)
        .map_err(|e| format!("{}: {e}", spec.disk))?;
    if let Some(damage) = &opened.damaged_activity_log {
        log(&spec.name, format_args!("{}: {damage}", spec.disk));
    }
    Ok(opened)
}

pub(crate) fn log(resource: &str, what: impl std::fmt::Display) {
    eprintln!("tandemd: {resource}: {what}");
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an IP:PORT address"))
}

impl ResourceHost {
    /// `drbdadm up`: open the disk and its meta-data, start the engine, the
    /// transport and the device.
    pub fn start(spec: ResourceSpec) -> Result<ResourceHost, String> {
        let name = spec.name.clone();
        let disk = Arc::new(
            FileDevice::open_backing(&spec.disk)
                .map_err(|e| format!("{}: cannot open the backing disk: {e}", spec.disk))?,
        );
        let peer_ids: Vec<u8> = spec.peers.iter().map(|p| p.node_id).collect();
        let protocol = match spec.protocol.as_str() {
            "A" => Protocol::A,
            "B" => Protocol::B,
            "C" => Protocol::C,
            other => return Err(format!("protocol {other}: not A, B or C")),
        };
        let opened = open_meta(&spec, &disk)?;
        let config = Config {
            node_id: spec.node_id,
            peers: peer_ids.clone(),
            protocol,
            allow_two_primaries: spec.allow_two_primaries,
            blocks: opened.blocks,
            al_extent_blocks: AL_EXTENT_BLOCKS,
            al_extents: opened.al_extents,
            resync_window: 64,
            epoch_writes: 256,
            resync_budget_per_tick: resync_budget_per_tick(spec.resync_rate),
            on_io_error: on_io_error_of(&spec),
        };
        let seed = random_seed();
        let (engine, first_actions) = Resource::open(config, opened.meta, seed);
        let events = Events(Arc::new(Mutex::new(None)));
        let stop = Arc::new(AtomicBool::new(false));

        let address = parse_address(&spec.address)?;
        let mut links = Vec::new();
        for peer in &spec.peers {
            links.push(Arc::new(PeerLink {
                node_id: peer.node_id,
                address: parse_address(&peer.address)?,
                wanted: AtomicBool::new(false),
                connected: AtomicBool::new(false),
            }));
        }
        let transport = Arc::new(Transport {
            resource: name.clone(),
            node_id: spec.node_id,
            address,
            peers: links.clone(),
            stop: stop.clone(),
            events: events.clone(),
        });
        let listener = transport
            .clone()
            .start()
            .map_err(|e| format!("listening on {}: {e}", spec.address))?;

        // The device: the engine behind FUSE, a loop device, /dev/drbdN.
        let gate = OpenGate::new(true);
        let mountpoint = PathBuf::from(format!("/run/tandem/dev/{name}"));
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| format!("{}: {e}", mountpoint.display()))?;
        let engine_device = Arc::new(EngineDevice {
            events: events.clone(),
            size: opened.blocks * BLOCK_SIZE as u64,
        });

        let disk_slot: DiskSlot = Arc::new(Mutex::new(Some(disk)));
        let disk_done: DoneSink = {
            let events = events.clone();
            Arc::new(move |token, result| events.send(HostMsg::DiskDone { token, result }).is_ok())
        };
        let jobs = Arc::new(DiskQueue::start(&name, disk_slot.clone(), disk_done));
        let mut state = EngineState {
            name: name.clone(),
            engine,
            store: Some(opened.store),
            disk_slot,
            jobs,
            links,
            connections: HashMap::new(),
            io_waiting: HashMap::new(),
            effects: Effects::default(),
            admin_waiting: HashMap::new(),
            next_id: 1,
            gate: gate.clone(),
            loop_path: Arc::new(Mutex::new(None)),
            sync_total: HashMap::new(),
            peer_names: spec
                .peers
                .iter()
                .map(|p| (p.node_id, p.name.clone()))
                .collect(),
            blocks: opened.blocks,
        };
        // The loop device is attached after the engine runs (attaching reads
        // through it); the engine learns its path through this.
        let loop_path = state.loop_path.clone();
        {
            let mut slot = events.0.lock().map_err(|_| "engine lock poisoned")?;
            state.run_actions(first_actions);
            *slot = Some(state);
            unlock_and_run_effects(slot);
        }
        let ticker = {
            let events = events.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("tick-{name}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(TICK);
                        if events.tick().is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| e.to_string())?
        };

        // A write is answered by the thread that completes it, but a read or a
        // flush holds its FUSE thread until done: as many threads as requests
        // the kernel keeps in flight (fio's QD16, the loop driver's). (4
        // threads measured the same for writes.)
        let serve_options = ServeOptions {
            threads: 16,
            ..ServeOptions::default()
        };
        let mount = DeviceMount::serve(
            engine_device.clone(),
            &mountpoint,
            gate.clone(),
            &serve_options,
        )
        .map_err(|e| format!("serving the device over FUSE: {e}"))?;
        let loop_device = LoopDevice::attach(mount.file(), &LoopOptions::default())
            .map_err(|e| format!("attaching a loop device: {e}"))?;
        device::make_device_node(std::path::Path::new(&spec.device), loop_device.path())
            .map_err(|e| format!("creating {}: {e}", spec.device))?;
        if let Ok(mut p) = loop_path.lock() {
            *p = Some(loop_device.path().to_owned());
        }
        // Secondary until promoted: the device refuses I/O.
        gate.refuse();

        let host = ResourceHost {
            spec,
            events,
            ticker: Some(ticker),
            listener,
            stop,
            mount: Some(mount),
            loop_device: Some(loop_device),
            device: engine_device,
            nbd: None,
        };
        for peer in &host.spec.peers {
            host.admin(Admin::Connect {
                peer: peer.node_id,
                discard_my_data: false,
            })?;
        }
        Ok(host)
    }

    pub fn admin(&self, command: Admin) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.events
            .send(HostMsg::Admin { command, reply })
            .map_err(|_| "the resource's engine has stopped".to_string())?;
        answer
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "no answer from the resource's engine".to_string())?
    }

    /// `drbdadm attach`: re-opens the backing disk and its meta-data and gives
    /// them to the (Diskless) engine, which resyncs what changed meanwhile.
    pub fn attach(&self) -> Result<(), String> {
        let disk = Arc::new(
            FileDevice::open_backing(&self.spec.disk)
                .map_err(|e| format!("{}: cannot open the backing disk: {e}", self.spec.disk))?,
        );
        let opened = open_meta(&self.spec, &disk)?;
        let (reply, answer) = mpsc::channel();
        self.events
            .send(HostMsg::Attach {
                disk,
                opened: Box::new(opened),
                reply,
            })
            .map_err(|_| "the resource's engine has stopped".to_string())?;
        answer
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "no answer from the resource's engine".to_string())?
    }

    pub fn status(&self) -> Result<ResourceStatus, String> {
        let (reply, answer) = mpsc::channel();
        self.events
            .send(HostMsg::Status { reply })
            .map_err(|_| "the resource's engine has stopped".to_string())?;
        answer
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "no answer from the resource's engine".to_string())
    }

    fn device_in_use(&self) -> bool {
        self.loop_device
            .as_ref()
            .and_then(|l| std::fs::metadata(l.path()).ok())
            .is_some_and(|m| device::is_mounted(std::os::unix::fs::MetadataExt::rdev(&m)))
    }

    /// Refuses while the device is mounted, as DRBD refuses while it is open.
    pub fn check_not_in_use(&self) -> Result<(), String> {
        if self.device_in_use() {
            return Err(format!(
                "{}: State change failed: (-12) Device is held open by someone",
                self.spec.name
            ));
        }
        Ok(())
    }

    /// Serves the resource over NBD on `addr` (export name: the resource's).
    /// I/O through it follows the role like `/dev/drbdN`: refused with
    /// `EMEDIUMTYPE` on a Secondary. Returns the address it listens on.
    pub fn export_nbd(&mut self, addr: SocketAddr) -> Result<SocketAddr, String> {
        if let Some(server) = &self.nbd {
            return Err(format!(
                "{}: already exported over NBD on {}",
                self.spec.name,
                server.local_addr()
            ));
        }
        let export = nbd::Export {
            name: self.spec.name.clone(),
            description: format!("tandem resource {} ({})", self.spec.name, self.spec.device),
            device: self.device.clone(),
            read_only: false,
        };
        let server = nbd::NbdServer::bind(addr, vec![export], nbd::ServerOptions::default())
            .map_err(|e| format!("{}: NBD export on {addr}: {e}", self.spec.name))?;
        let bound = server.local_addr();
        log(&self.spec.name, format!("NBD export on {bound}"));
        self.nbd = Some(server);
        Ok(bound)
    }

    /// Stops the NBD export, closing its connections.
    pub fn unexport_nbd(&mut self) {
        if let Some(server) = self.nbd.take() {
            server.shutdown();
            log(&self.spec.name, "NBD export stopped");
        }
    }

    /// `drbdadm down`: demote, disconnect, persist clean meta-data, tear down.
    /// The caller checks first that the device is not in use, unless the daemon
    /// is stopping (then the loop device goes away when its last user closes it).
    pub fn down(mut self) {
        self.unexport_nbd();
        let _ = self.admin(Admin::Secondary);
        for peer in self.spec.peers.clone() {
            let _ = self.admin(Admin::Disconnect { peer: peer.node_id });
        }
        if let Some(l) = self.loop_device.take() {
            let _ = l.detach();
        }
        if let Some(m) = self.mount.take() {
            let _ = m.shutdown();
        }
        let _ = std::fs::remove_file(&self.spec.device);
        let (reply, answer) = mpsc::channel();
        let _ = self.events.send(HostMsg::Down { reply });
        let result = answer.recv_timeout(Duration::from_secs(30));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        match result {
            Ok(Err(e)) => log(&self.spec.name, format!("down: {e}")),
            Err(_) => log(&self.spec.name, "down: the engine did not answer"),
            Ok(Ok(())) => {}
        }
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = io::Read::read_exact(&mut f, &mut bytes);
    }
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}

/// Everything the engine owns, behind the lock of [`Events`].
pub struct EngineState {
    name: String,
    engine: Resource,
    /// None while Diskless.
    store: Option<MetaStore>,
    disk_slot: DiskSlot,
    jobs: Arc<DiskQueue>,
    links: Vec<Arc<PeerLink>>,
    connections: HashMap<u8, Connection>,
    io_waiting: HashMap<u64, IoReply>,
    /// Left to do once the engine's lock is let go.
    effects: Effects,
    admin_waiting: HashMap<u64, AdminReply>,
    next_id: u64,
    gate: OpenGate,
    loop_path: Arc<Mutex<Option<PathBuf>>>,
    /// Out-of-sync blocks when the current resync with a peer started.
    sync_total: HashMap<u8, u64>,
    peer_names: HashMap<u8, String>,
    blocks: u64,
}

impl EngineState {
    /// Leave: persist clean meta-data if idle.
    fn down(&mut self) -> Result<(), String> {
        if !self.engine.is_idle() {
            return Err("requests still in flight; meta-data left for recovery".into());
        }
        match self.store.as_mut() {
            Some(store) => store
                .persist(&self.engine.meta(), true)
                .map_err(|e| format!("writing meta-data: {e}")),
            None => Ok(()), // Diskless: the detach wrote them
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn handle(&mut self, msg: HostMsg) {
        let role_before = self.engine.role();
        let event = match msg {
            HostMsg::Io { request, reply } => {
                let id = self.id();
                self.io_waiting.insert(id, reply);
                match request {
                    IoRequest::Read { block, count } => Event::Read { id, block, count },
                    IoRequest::Write { block, data } => Event::Write { id, block, data },
                    IoRequest::Flush => Event::Flush { id },
                }
            }
            HostMsg::Admin { command, reply } => {
                let id = self.id();
                self.admin_waiting.insert(id, reply);
                Event::Admin { id, command }
            }
            HostMsg::DiskDone { token, result } => Event::DiskDone { token, result },
            HostMsg::Connected { peer, connection } => {
                let wanted = self
                    .links
                    .iter()
                    .any(|l| l.node_id == peer && l.wanted.load(Ordering::Relaxed));
                if !wanted || self.connections.contains_key(&peer) {
                    connection.close();
                    return;
                }
                log(&self.name, format!("connected to {}", self.peer_name(peer)));
                self.connections.insert(peer, connection);
                Event::Connected { peer }
            }
            HostMsg::Frame {
                peer,
                connection,
                message,
            } => {
                if self.connections.get(&peer).map(|c| c.id) != Some(connection) {
                    return;
                }
                Event::Received { peer, message }
            }
            HostMsg::Lost { peer, connection } => {
                if self.connections.get(&peer).map(|c| c.id) != Some(connection) {
                    return;
                }
                self.connections.remove(&peer);
                log(
                    &self.name,
                    format!("connection to {} lost", self.peer_name(peer)),
                );
                Event::Disconnected { peer }
            }
            HostMsg::Status { reply } => {
                let _ = reply.send(self.status());
                return;
            }
            HostMsg::Attach {
                disk,
                opened,
                reply,
            } => {
                // Refused here as the engine would refuse it, the disk is not
                // taken up only to be let go.
                let refused = match self.engine.attach_refused() {
                    None if self.store.is_some() => Some(AdminError::Attached),
                    refused => refused,
                };
                if let Some(refused) = refused {
                    let _ = reply.send(Err(admin_message(&self.name, refused)));
                    return;
                }
                if opened.blocks != self.blocks {
                    let _ = reply.send(Err(format!(
                        "{}: the disk now has {} blocks, the device {}",
                        self.name, opened.blocks, self.blocks
                    )));
                    return;
                }
                let opened = *opened;
                self.store = Some(opened.store);
                if let Ok(mut slot) = self.disk_slot.lock() {
                    *slot = Some(disk);
                }
                log(&self.name, "disk attached");
                let id = self.id();
                self.admin_waiting.insert(id, reply);
                Event::Admin {
                    id,
                    command: Admin::Attach {
                        meta: Box::new(opened.meta),
                    },
                }
            }
            HostMsg::Down { .. } => return,
        };
        let actions = self.engine.handle(event);
        self.run_actions(actions);
        let role_after = self.engine.role();
        if role_after != role_before {
            if role_after == Role::Primary {
                self.gate.open();
                // What this node's kernel cached while the peer was writing is stale.
                let path = self.loop_path.lock().ok().and_then(|p| p.clone());
                if let Some(path) = path {
                    if let Err(e) = device::drop_cached_pages(&path) {
                        log(
                            &self.name,
                            format!("dropping cached pages of {}: {e}", path.display()),
                        );
                    }
                }
            } else {
                self.gate.refuse();
            }
        }
    }

    /// Queues a disk job, submitted once the engine's lock is let go.
    fn submit(&mut self, job: DiskJob) {
        self.effects.disk.get_or_insert_with(|| self.jobs.clone());
        self.effects.jobs.push(job);
    }

    fn peer_name(&self, peer: u8) -> String {
        self.peer_names
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| format!("node {peer}"))
    }

    fn run_actions(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::DiskWrite { token, block, data } => {
                    self.submit(DiskJob::Write {
                        token,
                        offset: block * BLOCK_SIZE as u64,
                        data,
                    });
                }
                Action::DiskRead {
                    token,
                    block,
                    count,
                } => {
                    self.submit(DiskJob::Read {
                        token,
                        offset: block * BLOCK_SIZE as u64,
                        len: count as usize * BLOCK_SIZE,
                    });
                }
                Action::DiskFlush { token } => {
                    self.submit(DiskJob::Flush { token });
                }
                Action::PersistMeta(meta) => {
                    if let Some(store) = self.store.as_mut() {
                        if let Err(e) = store.persist(&meta, false) {
                            log(&self.name, format!("writing meta-data failed: {e}"));
                        }
                    }
                }
                Action::DetachDisk(meta) => {
                    if let Some(mut store) = self.store.take() {
                        if let Err(e) = store.persist(&meta, true) {
                            log(&self.name, format!("writing meta-data failed: {e}"));
                        }
                    }
                    if let Ok(mut slot) = self.disk_slot.lock() {
                        *slot = None;
                    }
                    log(&self.name, "disk detached: Diskless");
                }
                Action::Send { peer, message } => {
                    if let Some(connection) = self.connections.get(&peer) {
                        let mut head = Vec::new();
                        let bulk = encode_split(message, &mut head);
                        connection.send(head, bulk, &mut self.effects.flushes);
                    }
                }
                Action::Connect { peer } => {
                    if let Some(link) = self.links.iter().find(|l| l.node_id == peer) {
                        link.wanted.store(true, Ordering::Relaxed);
                    }
                }
                Action::Disconnect { peer } => {
                    if let Some(link) = self.links.iter().find(|l| l.node_id == peer) {
                        link.wanted.store(false, Ordering::Relaxed);
                    }
                    if let Some(connection) = self.connections.remove(&peer) {
                        connection.close();
                    }
                }
                Action::Complete { id, result } => {
                    if let Some(reply) = self.io_waiting.remove(&id) {
                        self.effects.replies.push((reply, result));
                    }
                }
                Action::AdminDone { id, result } => {
                    if let Some(reply) = self.admin_waiting.remove(&id) {
                        let _ = reply.send(result.map_err(|e| admin_message(&self.name, e)));
                    }
                }
                Action::Note(note) => {
                    if let Note::SyncStarted { peer, blocks, .. } = &note {
                        self.sync_total.insert(*peer, *blocks);
                    }
                    log(&self.name, describe(&note, |p| self.peer_name(p)));
                }
            }
        }
    }

    fn status(&self) -> ResourceStatus {
        let peers = self
            .links
            .iter()
            .map(|link| {
                let peer = link.node_id;
                let name = self.peer_name(peer);
                let conn = self
                    .engine
                    .conn_state(peer)
                    .unwrap_or(ConnState::StandAlone);
                let repl = self.engine.repl_state(peer).unwrap_or(ReplState::Off);
                let progress = self.engine.verify_progress(peer);
                let (by_us, by_peer) = self.engine.resync_paused(peer).unwrap_or_default();
                let resync_suspended = match (by_us, by_peer) {
                    (false, false) => None,
                    (true, false) => Some("user".to_string()),
                    (false, true) => Some("peer".to_string()),
                    (true, true) => Some("user,peer".to_string()),
                };
                let syncing = matches!(repl, ReplState::SyncSource | ReplState::SyncTarget);
                let replication = match (repl, &resync_suspended) {
                    (ReplState::SyncSource, Some(_)) => "PausedSyncS".to_string(),
                    (ReplState::SyncTarget, Some(_)) => "PausedSyncT".to_string(),
                    _ => format!("{repl:?}"),
                };
                PeerStatus {
                    name,
                    node_id: peer,
                    connection: format!("{conn:?}"),
                    replication,
                    resync_suspended: resync_suspended.filter(|_| syncing),
                    role: self.engine.peer_role(peer).map(|r| format!("{r:?}")),
                    disk: self.engine.peer_disk(peer).map(|d| format!("{d:?}")),
                    out_of_sync: self.engine.out_of_sync(peer).unwrap_or(0),
                    blocks: self.blocks,
                    sync_total: self.sync_total.get(&peer).copied().unwrap_or(0),
                    verify_done: progress.map_or(0, |p| p.0),
                    verify_total: progress.map_or(0, |p| p.1),
                }
            })
            .collect();
        ResourceStatus {
            name: self.name.clone(),
            role: format!("{:?}", self.engine.role()),
            disk: format!("{:?}", self.engine.disk()),
            peers,
        }
    }
}

/// The words drbdadm uses for a refused state change.
fn admin_message(resource: &str, e: AdminError) -> String {
    let detail = match e {
        AdminError::PeerIsPrimary => "(-1) Multiple primaries not allowed by config",
        AdminError::NoUpToDateData => "(-2) Need access to UpToDate data",
        AdminError::Busy => "(-12) Device is held open by someone",
        AdminError::UnknownPeer => "(-3) Unknown peer",
        AdminError::PromotionPending => "(-10) Concurrent state changes detected and aborted",
        AdminError::Handshaking => "(-10) Concurrent state changes detected and aborted",
        AdminError::NeedConnection => "(-15) Need a connection to start verify or resync",
        AdminError::PrimaryDetach => {
            "(-2) Need access to UpToDate data (a Primary detaches only while a connected peer has UpToDate data, in sync with it)"
        }
        AdminError::DisklessPrimaryUses => {
            "(-2) Need access to UpToDate data (a Primary without UpToDate data of its own uses this disk: demote it first)"
        }
        AdminError::PrimaryAttach => {
            "(-2) Need access to UpToDate data (a Primary attaches a disk only while connected to its one peer, with UpToDate data to resync it from)"
        }
        AdminError::Attached => "(124) Device is attached to a disk (use detach first)",
        AdminError::ConnectedOutdate => "(-6) Refusing to be Outdated while Connected",
        AdminError::PrimaryOutdate => {
            "(-2) Need access to UpToDate data (a Primary is not outdated in tandem: demote it first)"
        }
        AdminError::NotJustCreated => {
            "the disk is not a just-created one (--clear-bitmap is for fresh meta-data, Inconsistent on every node)"
        }
        AdminError::PrimarySyncTarget => {
            "(-2) Need access to UpToDate data (a Primary cannot become sync target in tandem: demote it first)"
        }
    };
    format!("{resource}: State change failed: {detail}")
}

fn describe(note: &Note, name: impl Fn(u8) -> String) -> String {
    match note {
        Note::SyncStarted {
            peer,
            source,
            blocks,
        } => format!(
            "resync with {} started as {} ({} KiB out of sync)",
            name(*peer),
            if *source { "SyncSource" } else { "SyncTarget" },
            blocks * 4
        ),
        Note::SyncFinished { peer, copied } => format!(
            "resync with {} finished ({} KiB copied)",
            name(*peer),
            copied * 4
        ),
        Note::SplitBrain { peer } => format!(
            "Split-Brain detected with {}, dropping connection (resolve with `drbdadm connect --discard-my-data` on the victim)",
            name(*peer)
        ),
        Note::UnrelatedData { peer } => format!("unrelated data with {}, aborting", name(*peer)),
        Note::Refused { peer, reason } => format!("connection to {} refused: {reason}", name(*peer)),
        Note::ProtocolError { peer, reason } => format!("protocol error from {}: {reason}", name(*peer)),
        Note::Handshake {
            peer,
            mine,
            theirs,
            decision,
        } => format!(
            "handshake with {}: mine {:016X}:{:016X}:{:016X} theirs {:016X}:{:016X}:{:016X} -> {decision:?}",
            name(*peer),
            mine.current,
            mine.bitmap,
            mine.history[0],
            theirs.current,
            theirs.bitmap,
            theirs.history[0]
        ),
        Note::VerifyStarted { peer, source } => format!(
            "Online verify with {} started as {}",
            name(*peer),
            if *source { "VerifyS" } else { "VerifyT" }
        ),
        Note::VerifyFinished { peer, found } => format!(
            "Online verify with {} done; Online verify found {found} 4k blocks out of sync",
            name(*peer)
        ),
        Note::DiskFailed => {
            "the disk failed (on-io-error detach): Diskless; a Primary goes on with a peer's disk if one is UpToDate".to_string()
        }
        Note::VerifyAborted { peer } => format!(
            "Online verify with {} aborted: the connection was lost",
            name(*peer)
        ),
        Note::RequestRefused { peer, what } => format!(
            "refused {}'s request for a {what}: this node's state does not allow it",
            name(*peer)
        ),
        Note::ConcurrentWrite { peer, block } => {
            format!("concurrent write with {} to block {block} detected", name(*peer))
        }
    }
}

impl Drop for ResourceHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
