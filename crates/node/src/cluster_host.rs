//! The o2cb cluster stack in the daemon: the thin shell around the `cluster`
//! crate's sans-IO membership and lock manager.
//!
//! Threads, all feeding one channel of [`Event`]s to the cluster's engine thread,
//! which alone owns the state machines and the connection table:
//! - the listener on this node's `ip_port` (cluster.conf), which attributes an
//!   incoming connection to the node whose address it comes from and drops, with
//!   a log line, one from an address no node has;
//! - a dialer per connection attempt membership asks for (bound to this node's
//!   address, so the peer can attribute it);
//! - a reader per connection, which cuts the byte stream into frames and
//!   reports garbage (bad magic, oversized or malformed frames) instead of
//!   passing it on: the engine logs it and closes that connection only;
//! - the disk heartbeat thread, which on each beat writes this node's sector of
//!   the region (OCFS2's `heartbeat` system file on the shared volume) and reads
//!   every node's sector back;
//! - the engine itself, which also ticks every 100 ms.
//!
//! Lock requests come from control-socket clients through [`ClusterHost::lock`];
//! each client gets its grants, blocking notices and loss of its lock on its own
//! channel. One lock per resource per node (the DLM's rule): a second local
//! request for a resource held by another client is refused.
//!
//! Fencing: when membership decides this node lost the cluster (quorum, or its
//! own heartbeat writes stopped reaching the disk) the engine logs the reason,
//! stops the heartbeat, closes every connection and tells every lock holder its
//! lock is gone. The node stays fenced (shown by `o2cb cluster-status`) until
//! the cluster is unregistered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cluster::dlm::{Dlm, LockName, Mode, Output as DlmOutput, LVB_LEN};
use cluster::membership::{Input, Membership, MembershipConfig, Millis, Output as MemberOutput};
use cluster::message::{decode_dlm, decode_net, encode_dlm, encode_net, DecodeError, NetMessage};
use ocfs2::heartbeat::{HeartbeatBlock, HEARTBEAT_BLOCKS};

use crate::cluster_spec::ClusterSpec;
use crate::control::{ClusterStatus, DomainLocks, LockInfo, NodeStatus};

/// How often the engine ticks membership.
const TICK: Duration = Duration::from_millis(100);
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A write to a peer that takes longer than this breaks the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

fn log(what: impl std::fmt::Display) {
    eprintln!("tandemd: o2cb: {what}");
}

/// How a lock's owner is told what happens to its lock.
pub type LockNotify = Box<dyn Fn(LockEvent) + Send>;

/// What a lock's owner hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    Granted {
        mode: Mode,
        lvb: [u8; LVB_LEN],
    },
    /// Another node waits for `wanted`: release or downconvert when done.
    Blocking {
        wanted: Mode,
    },
    /// The request was refused, or the lock is gone (fencing, shutdown).
    Lost(String),
}

enum Command {
    StartHeartbeat {
        regions: Vec<PathBuf>,
        reply: Sender<Result<(), String>>,
    },
    StopHeartbeat {
        reply: Sender<Result<(), String>>,
    },
    Status {
        reply: Sender<ClusterStatus>,
    },
    Lock {
        domain: String,
        name: LockName,
        mode: Mode,
        client: u64,
        notify: LockNotify,
    },
    Release {
        domain: String,
        name: LockName,
        client: u64,
        lvb: Option<[u8; LVB_LEN]>,
        reply: Sender<Result<(), String>>,
    },
    Stop,
}

enum Event {
    Command(Command),
    Accepted {
        peer: u8,
        stream: TcpStream,
    },
    Dialed {
        peer: u8,
        result: io::Result<TcpStream>,
    },
    Frame {
        peer: u8,
        conn: u64,
        message: NetMessage,
    },
    Broken {
        peer: u8,
        conn: u64,
        why: String,
    },
    /// One beat of the disk heartbeat: what every node's sector holds.
    Disk {
        sectors: Vec<(u8, u64, u64)>,
    },
    DiskFailed(String),
}

/// The cluster stack of this node, once registered.
pub struct ClusterHost {
    spec: ClusterSpec,
    events: Sender<Event>,
    engine: Option<JoinHandle<()>>,
    listener_stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl ClusterHost {
    /// Registers the cluster: starts listening on this node's port. The node
    /// joins nobody until its heartbeat starts.
    pub fn register(spec: ClusterSpec) -> Result<ClusterHost, String> {
        let me = spec
            .local_node()
            .ok_or_else(|| format!("node {} is not in cluster '{}'", spec.local, spec.cluster))?
            .clone();
        let address = SocketAddr::new(IpAddr::V4(me.ip), me.port);
        let listener = TcpListener::bind(address)
            .map_err(|e| format!("cannot listen on {address} (node {}): {e}", me.name))?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let listener = {
            let (spec, tx, stop) = (spec.clone(), tx.clone(), stop.clone());
            thread::Builder::new()
                .name("o2net-listen".into())
                .spawn(move || listen(listener, &spec, &tx, &stop))
                .map_err(|e| e.to_string())?
        };
        let engine = {
            let (spec, tx) = (spec.clone(), tx.clone());
            thread::Builder::new()
                .name("o2cb".into())
                .spawn(move || Engine::new(spec, tx).run(&rx))
                .map_err(|e| e.to_string())?
        };
        log(format!(
            "cluster '{}' registered: node {} ({}) listening on {address}",
            spec.cluster, me.number, me.name
        ));
        Ok(ClusterHost {
            spec,
            events: tx,
            engine: Some(engine),
            listener_stop: stop,
            listener: Some(listener),
        })
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = mpsc::channel();
        self.events
            .send(Event::Command(make(tx)))
            .map_err(|_| "the cluster stack stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the cluster stack did not answer".to_string())
    }

    pub fn start_heartbeat(&self, regions: Vec<PathBuf>) -> Result<(), String> {
        self.ask(|reply| Command::StartHeartbeat { regions, reply })?
    }

    pub fn stop_heartbeat(&self) -> Result<(), String> {
        self.ask(|reply| Command::StopHeartbeat { reply })?
    }

    pub fn status(&self) -> Result<ClusterStatus, String> {
        self.ask(|reply| Command::Status { reply })
    }

    /// Asks for a lock; the answer and everything after go to `notify` (on
    /// the cluster's engine thread: it must not block). `client` identifies
    /// the requester in [`release`](ClusterHost::release).
    pub fn lock(
        &self,
        domain: &str,
        name: LockName,
        mode: Mode,
        client: u64,
        notify: LockNotify,
    ) -> Result<(), String> {
        self.events
            .send(Event::Command(Command::Lock {
                domain: domain.to_string(),
                name,
                mode,
                client,
                notify,
            }))
            .map_err(|_| "the cluster stack stopped".to_string())
    }

    /// Releases `client`'s lock (granted or still waiting).
    pub fn release(
        &self,
        domain: &str,
        name: LockName,
        client: u64,
        lvb: Option<[u8; LVB_LEN]>,
    ) -> Result<(), String> {
        self.ask(|reply| Command::Release {
            domain: domain.to_string(),
            name,
            client,
            lvb,
            reply,
        })?
    }

    /// Stops everything: heartbeat, connections, the listener.
    pub fn unregister(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.events.send(Event::Command(Command::Stop));
        if let Some(engine) = self.engine.take() {
            let _ = engine.join();
        }
        self.listener_stop.store(true, Ordering::SeqCst);
        if let Some(me) = self.spec.local_node() {
            // Wake the listener's accept so it sees the stop flag.
            let _ = TcpStream::connect_timeout(
                &SocketAddr::new(IpAddr::V4(me.ip), me.port),
                Duration::from_millis(500),
            );
        }
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        log(format!("cluster '{}' unregistered", self.spec.cluster));
    }
}

impl Drop for ClusterHost {
    fn drop(&mut self) {
        if self.engine.is_some() {
            self.shutdown();
        }
    }
}

fn listen(listener: TcpListener, spec: &ClusterSpec, events: &Sender<Event>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(from) = stream.peer_addr() else {
            continue;
        };
        let node = match from.ip() {
            IpAddr::V4(ip) => spec.node_at(ip),
            IpAddr::V6(_) => None,
        };
        match node {
            Some(node) => {
                let _ = events.send(Event::Accepted {
                    peer: node.number,
                    stream,
                });
            }
            None => {
                log(format!(
                    "refused a connection from {from}: no node of cluster '{}' has that address",
                    spec.cluster
                ));
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Reads frames from one connection until it breaks or sends garbage.
fn read_frames(mut stream: TcpStream, peer: u8, conn: u64, events: Sender<Event>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let why = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break "closed by the peer".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break e.to_string(),
        }
        let mut used = 0;
        let bad = loop {
            match decode_net(&buf[used..]) {
                Ok((message, n)) => {
                    used += n;
                    if events
                        .send(Event::Frame {
                            peer,
                            conn,
                            message,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(DecodeError::Incomplete(_)) => break None,
                Err(e) => break Some(format!("bad frame: {e}")),
            }
        };
        buf.drain(..used);
        if let Some(why) = bad {
            break why;
        }
    };
    let _ = events.send(Event::Broken { peer, conn, why });
}

/// The heartbeat region of a volume: where node 0's sector is.
struct Region {
    path: PathBuf,
    file: File,
    start: u64,
    /// Bytes per node: the device's logical sector size.
    sector: usize,
    /// Node slots the region holds.
    slots: usize,
}

impl Region {
    fn open(path: &Path) -> Result<Region, String> {
        let volume =
            ocfs2::Volume::open(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
                .map_err(|e| format!("{}: not an OCFS2 volume: {e}", path.display()))?;
        let (_, inode) = volume
            .lookup("//heartbeat")
            .map_err(|e| format!("{}: heartbeat system file: {e}", path.display()))?;
        let extents = volume
            .extents(&inode)
            .map_err(|e| format!("{}: heartbeat system file: {e}", path.display()))?;
        let first = extents.first().ok_or_else(|| {
            format!(
                "{}: the heartbeat system file has no blocks",
                path.display()
            )
        })?;
        let start = first.blkno * u64::from(volume.block_size());
        let region_bytes =
            u64::from(first.leaf_clusters()) * u64::from(volume.superblock().cluster_size());
        let device = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sector = blockdev::logical_block_size(&device);
        let slots = (region_bytes / sector as u64).min(HEARTBEAT_BLOCKS) as usize;
        // Sectors other nodes write must be read from the disk, not from this
        // host's cache: O_DIRECT where the file system allows it.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .or_else(|_| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_DSYNC)
                    .open(path)
            })
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Region {
            path: path.to_owned(),
            file,
            start,
            sector,
            slots,
        })
    }
}

/// A buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size; the memory is zeroed and freed
        // with the same layout in Drop.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Aligned { ptr, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to len initialized bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).expect("valid layout");
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

// SAFETY: the buffer is owned memory with no thread affinity.
unsafe impl Send for Aligned {}

struct Beat {
    sequence: u64,
}

fn heartbeat_thread(
    region: Region,
    node: u8,
    generation: u64,
    dead_ms: u32,
    nodes: Vec<u8>,
    beats: Receiver<Beat>,
    events: Sender<Event>,
) {
    let sector_len = region.sector;
    let mut sector = Aligned::new(sector_len.max(4096));
    let mut all = Aligned::new(region.slots * sector_len);
    while let Ok(Beat { sequence }) = beats.recv() {
        let ours = HeartbeatBlock {
            seq: sequence,
            node,
            cksum: 0,
            generation,
            dead_ms,
        };
        // O_DIRECT needs whole logical sectors from an aligned buffer.
        let buf = &mut sector.bytes()[..sector_len];
        ours.encode(buf);
        let at = region.start + u64::from(node) * sector_len as u64;
        if let Err(e) = region.file.write_all_at(buf, at) {
            let _ = events.send(Event::DiskFailed(format!(
                "{}: writing node {node}'s heartbeat sector: {e}",
                region.path.display()
            )));
            return;
        }
        if let Err(e) = region.file.read_exact_at(all.bytes(), region.start) {
            let _ = events.send(Event::DiskFailed(format!(
                "{}: reading the heartbeat region: {e}",
                region.path.display()
            )));
            return;
        }
        let bytes = all.bytes();
        let sectors = nodes
            .iter()
            .map(|&n| {
                let raw = &bytes[usize::from(n) * sector_len..][..sector_len];
                // A sector with a bad checksum or another node's number is
                // treated as empty: nobody heartbeats there.
                match HeartbeatBlock::decode(raw, u64::from(n)) {
                    Ok(b) if HeartbeatBlock::checksum_ok(raw) && b.node == n => {
                        (n, b.generation, b.seq)
                    }
                    _ => (n, 0, 0),
                }
            })
            .collect();
        if events.send(Event::Disk { sectors }).is_err() {
            return;
        }
    }
}

struct Conn {
    id: u64,
    stream: TcpStream,
}

struct Holder {
    client: u64,
    notify: LockNotify,
    granted: Option<Mode>,
    /// The client went away while waiting: unlock as soon as granted.
    abandoned: bool,
}

enum Work {
    Member(MemberOutput),
    Dlm(String, DlmOutput),
}

struct Online {
    membership: Membership,
    beats: Sender<Beat>,
    regions: Vec<PathBuf>,
    last_beat: Millis,
}

struct Engine {
    spec: ClusterSpec,
    events: Sender<Event>,
    start: Instant,
    online: Option<Online>,
    fenced: Option<String>,
    conns: BTreeMap<u8, Conn>,
    next_conn: u64,
    generation: u64,
    dlms: BTreeMap<String, Dlm>,
    heartbeating: Option<BTreeSet<u8>>,
    holders: BTreeMap<(String, LockName), Holder>,
    sent: u64,
}

impl Engine {
    fn new(spec: ClusterSpec, events: Sender<Event>) -> Engine {
        Engine {
            spec,
            events,
            start: Instant::now(),
            online: None,
            fenced: None,
            conns: BTreeMap::new(),
            next_conn: 1,
            generation: 0,
            dlms: BTreeMap::new(),
            heartbeating: None,
            holders: BTreeMap::new(),
            sent: 0,
        }
    }

    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn run(mut self, rx: &Receiver<Event>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Event::Command(Command::Stop)) => {
                    self.go_offline("the cluster is being unregistered");
                    return;
                }
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                self.tick();
            }
        }
    }

    fn membership_input(&mut self, input: Input) {
        let now = self.now();
        let Some(online) = self.online.as_mut() else {
            return;
        };
        let outputs = online.membership.handle(now, input);
        self.process(outputs.into_iter().map(Work::Member).collect());
    }

    fn tick(&mut self) {
        let now = self.now();
        if let Some(online) = &self.online {
            // o2hb's disk timeout: our own sector has not been written for the
            // dead time; the others will think us dead, so we must stop.
            let dead = online.membership.config().dead_time_ms();
            if now.saturating_sub(online.last_beat) > dead.max(1) {
                self.membership_input(Input::DiskTimeout);
                return;
            }
        }
        self.membership_input(Input::Tick);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Command(command) => self.on_command(command),
            Event::Accepted { peer, stream } => self.attach(peer, stream, "accepted"),
            Event::Dialed { peer, result } => match result {
                Ok(stream) => self.attach(peer, stream, "connected"),
                Err(_) => self.membership_input(Input::ConnectFailed { peer }),
            },
            Event::Frame {
                peer,
                conn,
                message,
            } => {
                if self.conns.get(&peer).is_some_and(|c| c.id == conn) {
                    self.membership_input(Input::Received { peer, message });
                }
            }
            Event::Broken { peer, conn, why } => {
                if self.conns.get(&peer).is_some_and(|c| c.id == conn) {
                    if why.starts_with("bad frame") {
                        log(format!("node {peer}: {why}; closing the connection"));
                    }
                    self.close(peer);
                    self.membership_input(Input::Disconnected { peer });
                }
            }
            Event::Disk { sectors } => {
                let now = self.now();
                if let Some(online) = self.online.as_mut() {
                    online.last_beat = now;
                }
                for (peer, generation, sequence) in sectors {
                    self.membership_input(Input::DiskHeartbeat {
                        peer,
                        generation,
                        sequence,
                    });
                }
            }
            Event::DiskFailed(why) => {
                log(format!("disk heartbeat stopped: {why}"));
                // The timeout in tick() fences once the dead time has passed.
            }
        }
    }

    fn attach(&mut self, peer: u8, stream: TcpStream, how: &str) {
        if self.online.is_none() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        let id = self.next_conn;
        self.next_conn += 1;
        let events = self.events.clone();
        if thread::Builder::new()
            .name(format!("o2net-{peer}"))
            .spawn(move || read_frames(reader, peer, id, events))
            .is_err()
        {
            return;
        }
        if let Some(old) = self.conns.insert(peer, Conn { id, stream }) {
            let _ = old.stream.shutdown(Shutdown::Both);
        }
        let name = self.node_name(peer);
        log(format!("{how} node {peer} ({name})"));
        self.membership_input(Input::Connected { peer });
    }

    fn close(&mut self, peer: u8) {
        if let Some(conn) = self.conns.remove(&peer) {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    fn node_name(&self, n: u8) -> String {
        self.spec
            .node(n)
            .map_or_else(|| format!("node{n}"), |x| x.name.clone())
    }

    fn dial(&self, peer: u8) {
        let (Some(me), Some(node)) = (self.spec.local_node(), self.spec.node(peer)) else {
            return;
        };
        let local = SocketAddr::new(IpAddr::V4(me.ip), 0);
        let remote = SocketAddr::new(IpAddr::V4(node.ip), node.port);
        let events = self.events.clone();
        let _ = thread::Builder::new()
            .name(format!("o2net-dial-{peer}"))
            .spawn(move || {
                let result = dial_from(local, remote);
                let _ = events.send(Event::Dialed { peer, result });
            });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::StartHeartbeat { regions, reply } => {
                let _ = reply.send(self.start_heartbeat(regions));
            }
            Command::StopHeartbeat { reply } => {
                self.go_offline("the heartbeat was stopped");
                self.fenced = None;
                let _ = reply.send(Ok(()));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Lock {
                domain,
                name,
                mode,
                client,
                notify,
            } => self.lock(domain, name, mode, client, notify),
            Command::Release {
                domain,
                name,
                client,
                lvb,
                reply,
            } => {
                let _ = reply.send(self.release(&domain, &name, client, lvb));
            }
            Command::Stop => {}
        }
    }

    fn start_heartbeat(&mut self, regions: Vec<PathBuf>) -> Result<(), String> {
        if let Some(reason) = &self.fenced {
            return Err(format!(
                "this node fenced itself ({reason}); unregister the cluster first"
            ));
        }
        if self.online.is_some() {
            return Ok(());
        }
        let first = regions
            .first()
            .ok_or("no heartbeat region: add one with `o2cb add-heartbeat`")?;
        let region = Region::open(first)?;
        if let Some(n) = self.spec.nodes.iter().map(|n| n.number).max() {
            if usize::from(n) >= region.slots {
                return Err(format!(
                    "{}: the heartbeat region holds {} sectors of {} bytes, too few for node {n}",
                    first.display(),
                    region.slots,
                    region.sector
                ));
            }
        }
        self.generation = new_generation();
        let nodes: BTreeSet<u8> = self.spec.nodes.iter().map(|n| n.number).collect();
        let config = MembershipConfig {
            cluster: self.spec.cluster.clone(),
            local: self.spec.local,
            nodes: nodes.clone(),
            generation: self.generation,
            idle_timeout_ms: self.spec.idle_timeout_ms,
            keepalive_delay_ms: self.spec.keepalive_delay_ms,
            reconnect_delay_ms: self.spec.reconnect_delay_ms,
            heartbeat_threshold: self.spec.heartbeat_threshold,
            heartbeat_interval_ms: cluster_heartbeat_interval_ms(),
        };
        let dead_ms = u32::try_from(config.dead_time_ms()).unwrap_or(u32::MAX);
        let (beats_tx, beats_rx) = mpsc::channel();
        let events = self.events.clone();
        let local = self.spec.local;
        let generation = self.generation;
        let node_list: Vec<u8> = nodes.into_iter().collect();
        thread::Builder::new()
            .name("o2hb".into())
            .spawn(move || {
                heartbeat_thread(
                    region, local, generation, dead_ms, node_list, beats_rx, events,
                )
            })
            .map_err(|e| e.to_string())?;
        let now = self.now();
        self.online = Some(Online {
            membership: Membership::new(config, now),
            beats: beats_tx,
            regions: regions.clone(),
            last_beat: now,
        });
        log(format!(
            "heartbeat started on {} (generation {:016x})",
            first.display(),
            self.generation
        ));
        self.membership_input(Input::Tick);
        Ok(())
    }

    /// Leaves the cluster: heartbeat, connections and locks end here.
    fn go_offline(&mut self, why: &str) {
        if self.online.take().is_none() {
            return;
        }
        let peers: Vec<u8> = self.conns.keys().copied().collect();
        for peer in peers {
            self.close(peer);
        }
        for (_, holder) in std::mem::take(&mut self.holders) {
            (holder.notify)(LockEvent::Lost(why.to_string()));
        }
        self.dlms.clear();
        self.heartbeating = None;
        log(format!("offline: {why}"));
    }

    fn status(&self) -> ClusterStatus {
        let membership = self.online.as_ref().map(|o| &o.membership);
        let members = membership.map(Membership::members).unwrap_or_default();
        let connected = membership.map(Membership::connected).unwrap_or_default();
        let heartbeating = membership.map(Membership::heartbeating).unwrap_or_default();
        let nodes = self
            .spec
            .nodes
            .iter()
            .map(|n| {
                let local = n.number == self.spec.local;
                NodeStatus {
                    number: n.number,
                    name: n.name.clone(),
                    address: format!("{}:{}", n.ip, n.port),
                    local,
                    member: (local && self.online.is_some()) || members.contains_key(&n.number),
                    connected: connected.contains(&n.number),
                    heartbeating: (local && self.online.is_some())
                        || heartbeating.contains(&n.number),
                }
            })
            .collect();
        let domains = self
            .dlms
            .iter()
            .map(|(domain, dlm)| {
                let mut locks: Vec<LockInfo> = dlm
                    .resources()
                    .into_iter()
                    .map(|r| LockInfo {
                        name: r.name.to_string(),
                        master: self.spec.local,
                        holders: r.holders.iter().map(|(n, m)| (*n, m.to_string())).collect(),
                        waiting: r.waiting.iter().map(|(n, m)| (*n, m.to_string())).collect(),
                    })
                    .collect();
                // Locks held here on resources another node masters.
                for ((d, name), holder) in &self.holders {
                    if d != domain || dlm.master_of(name) == self.spec.local {
                        continue;
                    }
                    locks.push(LockInfo {
                        name: name.to_string(),
                        master: dlm.master_of(name),
                        holders: holder
                            .granted
                            .map(|m| vec![(self.spec.local, m.to_string())])
                            .unwrap_or_default(),
                        waiting: Vec::new(),
                    });
                }
                DomainLocks {
                    domain: domain.clone(),
                    locks,
                }
            })
            .collect();
        ClusterStatus {
            cluster: self.spec.cluster.clone(),
            local: self.spec.local,
            online: self.online.is_some(),
            fenced: self.fenced.clone(),
            generation: self.generation,
            regions: self
                .online
                .as_ref()
                .map(|o| o.regions.iter().map(|p| p.display().to_string()).collect())
                .unwrap_or_default(),
            nodes,
            domains,
            messages_sent: self.sent,
        }
    }

    fn dlm(&mut self, domain: &str) -> &mut Dlm {
        if !self.dlms.contains_key(domain) {
            let mut dlm = Dlm::new(domain, self.spec.local, self.generation);
            let mut work = Vec::new();
            if let Some(online) = &self.online {
                for (node, generation) in online.membership.members() {
                    work.extend(dlm.node_up(node, generation));
                }
            }
            if let Some(nodes) = &self.heartbeating {
                work.extend(dlm.heartbeating(nodes.clone()));
            }
            self.dlms.insert(domain.to_string(), dlm);
            let work = work
                .into_iter()
                .map(|o| Work::Dlm(domain.to_string(), o))
                .collect();
            self.process(work);
        }
        self.dlms.get_mut(domain).expect("inserted above")
    }

    fn lock(
        &mut self,
        domain: String,
        name: LockName,
        mode: Mode,
        client: u64,
        notify: LockNotify,
    ) {
        if let Some(reason) = &self.fenced {
            notify(LockEvent::Lost(format!("this node is fenced: {reason}")));
            return;
        }
        if self.online.is_none() {
            notify(LockEvent::Lost(
                "the cluster is not online (o2cb start-heartbeat)".into(),
            ));
            return;
        }
        let key = (domain.clone(), name.clone());
        if let Some(h) = self.holders.get(&key) {
            if h.client != client {
                notify(LockEvent::Lost(format!(
                    "{domain}/{name}: already held or requested by another command on this node"
                )));
                return;
            }
        }
        let result = self.dlm(&domain).lock(&name, mode, 0);
        match result {
            Ok(outputs) => {
                self.holders.insert(
                    key,
                    Holder {
                        client,
                        notify,
                        granted: None,
                        abandoned: false,
                    },
                );
                self.process(
                    outputs
                        .into_iter()
                        .map(|o| Work::Dlm(domain.clone(), o))
                        .collect(),
                );
            }
            Err(e) => notify(LockEvent::Lost(e.to_string())),
        }
    }

    fn release(
        &mut self,
        domain: &str,
        name: &LockName,
        client: u64,
        lvb: Option<[u8; LVB_LEN]>,
    ) -> Result<(), String> {
        let key = (domain.to_string(), name.clone());
        let Some(holder) = self.holders.get_mut(&key) else {
            return Ok(());
        };
        if holder.client != client {
            return Err(format!("{domain}/{name}: held by another command"));
        }
        if holder.granted.is_none() {
            // Still waiting: the DLM has no cancel, so drop it when granted.
            holder.abandoned = true;
            return Ok(());
        }
        self.holders.remove(&key);
        let outputs = self
            .dlm(domain)
            .unlock(name, lvb)
            .map_err(|e| e.to_string())?;
        self.process(
            outputs
                .into_iter()
                .map(|o| Work::Dlm(domain.to_string(), o))
                .collect(),
        );
        Ok(())
    }

    /// Carries out outputs of both machines until none is left.
    fn process(&mut self, work: Vec<Work>) {
        let mut queue: VecDeque<Work> = work.into();
        while let Some(item) = queue.pop_front() {
            match item {
                Work::Member(output) => self.on_member_output(output, &mut queue),
                Work::Dlm(domain, output) => self.on_dlm_output(&domain, output, &mut queue),
            }
        }
    }

    fn on_member_output(&mut self, output: MemberOutput, queue: &mut VecDeque<Work>) {
        match output {
            MemberOutput::Connect { peer } => self.dial(peer),
            MemberOutput::Close { peer } => self.close(peer),
            MemberOutput::Send { peer, message } => {
                let mut bytes = Vec::new();
                encode_net(&message, &mut bytes);
                let failed = match self.conns.get(&peer) {
                    Some(conn) => (&conn.stream).write_all(&bytes).is_err(),
                    None => false,
                };
                if failed {
                    self.close(peer);
                    let now = self.now();
                    if let Some(online) = self.online.as_mut() {
                        let outputs = online.membership.handle(now, Input::Disconnected { peer });
                        queue.extend(outputs.into_iter().map(Work::Member));
                    }
                } else if matches!(message, NetMessage::Data { .. }) {
                    self.sent += 1;
                }
            }
            MemberOutput::WriteHeartbeat { sequence } => {
                if let Some(online) = &self.online {
                    let _ = online.beats.send(Beat { sequence });
                }
            }
            MemberOutput::Refused { peer, error } => {
                log(format!("refused node {peer}: {error}"));
            }
            MemberOutput::Joined { node, generation } => {
                log(format!(
                    "node {node} ({}) joined (generation {generation:016x})",
                    self.node_name(node)
                ));
                self.every_domain(queue, |dlm| dlm.node_up(node, generation));
            }
            MemberOutput::Dead { node, generation } => {
                log(format!(
                    "node {node} ({}) is dead (generation {generation:016x})",
                    self.node_name(node)
                ));
                self.every_domain(queue, |dlm| dlm.node_down(node, generation));
            }
            MemberOutput::Deliver {
                node,
                generation,
                payload,
            } => match decode_dlm(&payload) {
                Ok(message) => {
                    let domain = message.domain().to_string();
                    let outputs = self.dlm(&domain).receive(node, generation, message);
                    queue.extend(outputs.into_iter().map(|o| Work::Dlm(domain.clone(), o)));
                }
                Err(e) => log(format!("node {node}: undecodable lock message: {e}")),
            },
            MemberOutput::Heartbeating { nodes } => {
                self.heartbeating = Some(nodes.clone());
                self.every_domain(queue, |dlm| dlm.heartbeating(nodes.clone()));
            }
            MemberOutput::Fence { reason } => {
                let reason = reason.to_string();
                log(&reason);
                self.go_offline(&reason);
                self.fenced = Some(reason);
                queue.clear();
            }
        }
    }

    /// Tells every lock domain the same news.
    fn every_domain(
        &mut self,
        queue: &mut VecDeque<Work>,
        mut tell: impl FnMut(&mut Dlm) -> Vec<DlmOutput>,
    ) {
        for (domain, dlm) in &mut self.dlms {
            queue.extend(tell(dlm).into_iter().map(|o| Work::Dlm(domain.clone(), o)));
        }
    }

    fn on_dlm_output(&mut self, domain: &str, output: DlmOutput, queue: &mut VecDeque<Work>) {
        match output {
            DlmOutput::Send {
                to,
                generation,
                message,
            } => {
                let now = self.now();
                if let Some(online) = self.online.as_mut() {
                    let outputs = online
                        .membership
                        .send(now, to, generation, encode_dlm(&message));
                    queue.extend(outputs.into_iter().map(Work::Member));
                }
            }
            DlmOutput::Granted {
                name, mode, lvb, ..
            } => {
                let key = (domain.to_string(), name.clone());
                let Some(holder) = self.holders.get_mut(&key) else {
                    return;
                };
                if holder.abandoned {
                    self.holders.remove(&key);
                    if let Some(dlm) = self.dlms.get_mut(domain) {
                        if let Ok(outputs) = dlm.unlock(&name, None) {
                            queue.extend(
                                outputs
                                    .into_iter()
                                    .map(|o| Work::Dlm(domain.to_string(), o)),
                            );
                        }
                    }
                    return;
                }
                holder.granted = Some(mode);
                (holder.notify)(LockEvent::Granted { mode, lvb });
            }
            DlmOutput::Blocking { name, wanted } => {
                if let Some(holder) = self.holders.get(&(domain.to_string(), name)) {
                    (holder.notify)(LockEvent::Blocking { wanted });
                }
            }
            DlmOutput::Recover { node, generation } => {
                // Nothing above the lock manager keeps a journal yet: recovery of
                // the dead node is complete as soon as we are told to do it.
                log(format!(
                    "domain {domain}: recovering node {node} (generation {generation:016x}): \
                     no journal to replay"
                ));
                if let Some(dlm) = self.dlms.get_mut(domain) {
                    let outputs = dlm.recovery_done(node, generation);
                    queue.extend(
                        outputs
                            .into_iter()
                            .map(|o| Work::Dlm(domain.to_string(), o)),
                    );
                }
            }
        }
    }
}

fn dial_from(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(remote),
        socket2::Type::STREAM,
        None,
    )?;
    socket.bind(&local.into())?;
    socket.connect_timeout(&remote.into(), DIAL_TIMEOUT)?;
    Ok(socket.into())
}

/// A fresh, non-zero incarnation number.
fn new_generation() -> u64 {
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        bytes = (t ^ u64::from(std::process::id()) << 32).to_le_bytes();
    }
    u64::from_le_bytes(bytes).max(1)
}

/// The disk heartbeat period: o2cb's 2 s.
fn cluster_heartbeat_interval_ms() -> u32 {
    u32::try_from(cluster::settings::HEARTBEAT_INTERVAL.as_millis()).unwrap_or(2000)
}
