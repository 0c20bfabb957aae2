//! Deterministic simulation of a replicated resource on two nodes.
//!
//! One thread, one seeded RNG. The network is a FIFO stream per connection with
//! random delays, broken at random (everything in flight is lost) and partitioned
//! at random; disks complete I/O in random order and lose unflushed writes when
//! their node crashes; nodes crash and come back from their persisted meta-data.
//! Every message goes through the wire codec.
//!
//! Invariants, checked as the run goes and at its end:
//! - two connected nodes are never both Primary (single-primary runs);
//! - protocol C: after the Primary crashes, a Secondary that was in sync with it is
//!   promoted and holds every write the Primary acknowledged (failover);
//! - nothing acknowledged before a completed flush is ever lost, whatever crashes;
//! - once faults stop, the nodes reconnect, resync, and hold identical data;
//! - dual-primary runs replicate both sides' writes; concurrent writes to one block
//!   from both sides are reported, and only reported blocks may differ;
//! - the engine never panics.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use replication::message::{decode, encode};
use replication::{
    Action, Admin, Config, ConnState, Event, Meta, Note, OnIoError, Protocol, ReplState, Resource,
    Role, VerifyAlg, BLOCK_SIZE,
};

const BLOCKS: u64 = 96;
/// Bytes in a block.
const BLOCK: u64 = replication::BLOCK_SIZE as u64;

use simkit::Rng;

/// A disk whose writes sit in a volatile cache until flushed.
#[derive(Default)]
struct SimDisk {
    durable: HashMap<u64, u64>,
    /// (completion order, block, tag)
    volatile: Vec<(u64, u64, u64)>,
    completions: u64,
    meta: Option<Meta>,
}

impl SimDisk {
    fn read(&self, block: u64) -> u64 {
        self.volatile
            .iter()
            .rev()
            .find(|(_, b, _)| *b == block)
            .map(|(_, _, t)| *t)
            .or_else(|| self.durable.get(&block).copied())
            .unwrap_or(0)
    }
    fn write(&mut self, block: u64, tag: u64) {
        self.completions += 1;
        self.volatile.push((self.completions, block, tag));
    }
    /// Makes everything completed before `mark` durable.
    fn flush(&mut self, mark: u64) {
        let (old, new): (Vec<_>, Vec<_>) =
            self.volatile.drain(..).partition(|(c, _, _)| *c <= mark);
        for (_, b, t) in old {
            self.durable.insert(b, t);
        }
        self.volatile = new;
    }
    fn crash(&mut self, rng: &mut Rng) {
        // Each unflushed write may or may not have reached the platter.
        for (_, b, t) in std::mem::take(&mut self.volatile) {
            if rng.chance(500) {
                self.durable.insert(b, t);
            }
        }
    }
}

fn block_data(tag: u64) -> Vec<u8> {
    let mut data = vec![0u8; BLOCK_SIZE];
    data[..8].copy_from_slice(&tag.to_le_bytes());
    data
}

fn tag_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[..8].try_into().unwrap())
}

enum DiskOp {
    Write { block: u64, data: bytes::Bytes },
    Read { block: u64, count: u64 },
    Flush { mark: u64 },
}

struct Node {
    engine: Option<Resource>,
    disk: SimDisk,
    disk_ops: Vec<(u64, DiskOp)>,
    /// Peers the engine wants to be connected to.
    wants: HashSet<u8>,
    /// Application requests in flight: id → (blocks and tags written, or a flush).
    app: HashMap<u64, AppRequest>,
    admin_results: Vec<(u64, bool)>,
    /// The engine released its disk (`DetachDisk`): no disk action until attach.
    detached: bool,
    /// The disk fails every action (until it is attached again, repaired).
    failing: bool,
}

#[derive(Clone)]
enum AppRequest {
    /// The blocks and their tags; whether the Primary was diskless when it
    /// was issued (it stands on the peer's WriteAck alone).
    Write(Vec<(u64, u64)>, bool),
    Flush,
    /// A read of blocks from `block`, and the tag each had acknowledged when
    /// it was issued.
    Read {
        block: u64,
        acked: Vec<u64>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Protocol C, one Primary, crashes and failover.
    Failover,
    /// Protocol A/B/C, one Primary, network faults and Secondary crashes.
    Protocols,
    /// A partition with both sides Primary, then split-brain recovery.
    SplitBrain,
    /// Both Primary, writing the same blocks at once.
    DualPrimary,
    /// Protocols' faults, the Secondary detaching and attaching its disk, the
    /// Primary detaching its own (it goes on with the Secondary's), and either
    /// disk failing (`on-io-error detach`) while the other is UpToDate.
    Detach,
    /// One Primary, a replica corrupted behind the engine's back, online verify;
    /// network faults (no crashes) when `Sim::verify_faults`.
    Verify,
}

/// Per block: the last acknowledged tag and the tags still in flight.
#[derive(Default, Clone)]
struct BlockModel {
    acked: u64,
    pending: Vec<u64>,
    /// The tag a completed flush made durable, and every tag issued to the block
    /// since that flush began.
    flushed: u64,
    since_flush: Vec<u64>,
    /// Every tag ever issued to the block.
    issued: HashSet<u64>,
}

struct Sim {
    rng: Rng,
    mode: Mode,
    seed: u64,
    config: Config,
    nodes: Vec<Node>,
    /// Live connections (a < b), with their two FIFO message streams.
    links: BTreeMap<(u8, u8), [VecDeque<Vec<u8>>; 2]>,
    partitioned: bool,
    model: Vec<BlockModel>,
    next_id: u64,
    next_tag: u64,
    /// Tags of writes in flight when a flush was issued: flush id → snapshot.
    flush_snapshots: HashMap<u64, Vec<u64>>,
    crashes: u32,
    /// A diskless Primary's write completed (on its peer's WriteAck) and no
    /// flush issued since (request ids from this one on) has completed: the
    /// peer's crash may lose it, even once the Primary attached a disk.
    diskless_unflushed_since: Option<u64>,
    /// Promotions of the in-sync Secondary after its Primary crashed, each
    /// checked by `check_failover`.
    failovers: u32,
    /// Application reads whose data `check_read` compared with the model,
    /// and of those, the ones a diskless Primary read from its peer.
    reads_checked: u32,
    remote_reads_checked: u32,
    /// Per node: bytes of every disk read the engine issued, and its ticks.
    bytes_read: [u64; 2],
    ticks: [u64; 2],
    notes: Vec<Note>,
    trace: Vec<String>,
    /// Blocks the application wrote (cleared when a verify starts).
    written: HashSet<u64>,
    verify_faults: bool,
}

impl Sim {
    fn new(seed: u64, mode: Mode) -> Sim {
        let mut rng = Rng::new(seed);
        let protocol = match mode {
            Mode::Protocols | Mode::Detach => {
                [Protocol::A, Protocol::B, Protocol::C][rng.below(3) as usize]
            }
            _ => Protocol::C,
        };
        let mut config = Config::new(0, vec![1], BLOCKS);
        config.protocol = protocol;
        config.allow_two_primaries = mode == Mode::DualPrimary;
        config.al_extent_blocks = 8;
        config.al_extents = 3 + rng.below(4) as usize;
        config.resync_window = 1 + rng.below(8) as usize;
        config.epoch_writes = 1 + rng.below(6) as u32;
        // A third of the runs resync under a rate limit of 1 to 16 blocks a tick.
        if rng.below(3) == 0 {
            config.resync_budget_per_tick = Some(BLOCK * (1 + rng.below(16)));
        }
        let mut sim = Sim {
            rng,
            mode,
            seed,
            config,
            nodes: Vec::new(),
            links: BTreeMap::new(),
            partitioned: false,
            model: vec![BlockModel::default(); BLOCKS as usize],
            next_id: 1,
            next_tag: 1,
            flush_snapshots: HashMap::new(),
            crashes: 0,
            diskless_unflushed_since: None,
            failovers: 0,
            reads_checked: 0,
            remote_reads_checked: 0,
            bytes_read: [0; 2],
            ticks: [0; 2],
            notes: Vec::new(),
            trace: Vec::new(),
            written: HashSet::new(),
            verify_faults: false,
        };
        for id in 0..2u8 {
            let config = sim.config_for(id);
            let meta = Meta::fresh(&config);
            sim.nodes.push(Node {
                engine: None,
                disk: SimDisk {
                    meta: Some(meta),
                    ..SimDisk::default()
                },
                disk_ops: Vec::new(),
                wants: HashSet::new(),
                app: HashMap::new(),
                admin_results: Vec::new(),
                detached: false,
                failing: false,
            });
            sim.start(id);
        }
        sim
    }

    fn config_for(&self, id: u8) -> Config {
        let mut config = self.config.clone();
        config.node_id = id;
        config.peers = vec![1 - id];
        config
    }

    fn fail(&self, what: &str) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(60).collect();
        let states: Vec<String> = (0..2u8)
            .map(|i| {
                let n = &self.nodes[i as usize];
                match &n.engine {
                    None => format!("node {i}: down"),
                    Some(e) => format!(
                        "node {i}: {:?} {:?} uuid {:#x} conn {:?} repl {:?} peer {:?}/{:?} oos {:?} idle {} app {} disk_ops {} wants {:?}",
                        e.role(), e.disk(), e.current_uuid(), e.conn_state(1 - i), e.repl_state(1 - i),
                        e.peer_role(1 - i), e.peer_disk(1 - i), e.out_of_sync(1 - i), e.is_idle(),
                        n.app.len(), n.disk_ops.len(), n.wants
                    ) + "\n    " + &e.debug_state(),
                }
            })
            .collect();
        if let Ok(path) = std::env::var("SIM_TRACE") {
            let _ = std::fs::write(path, self.trace.join("\n"));
        }
        panic!(
            "seed {} mode {:?}: {what}\n{}\nlast events (newest first):\n{}",
            self.seed,
            self.mode as u8,
            states.join("\n"),
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// `drbdadm up`: open from the persisted meta-data and connect.
    fn start(&mut self, id: u8) {
        let config = self.config_for(id);
        let meta = self.nodes[id as usize]
            .disk
            .meta
            .clone()
            .expect("meta-data");
        let seed = self.rng.next_u64();
        let (engine, actions) = Resource::open(config, meta, seed);
        self.nodes[id as usize].engine = Some(engine);
        self.apply(id, actions);
        self.admin(
            id,
            Admin::Connect {
                peer: 1 - id,
                discard_my_data: false,
            },
        );
    }

    fn admin(&mut self, id: u8, command: Admin) -> u64 {
        let rid = self.next_id;
        self.next_id += 1;
        self.trace.push(format!("node {id}: admin {command:?}"));
        self.event(id, Event::Admin { id: rid, command });
        rid
    }

    /// Steps (without faults) until `done`, and fails if that takes more
    /// than 10,000 steps.
    fn step_until(&mut self, what: &str, done: impl Fn(&Sim) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.step(false);
        }
        self.fail(&format!("never {what}"));
    }

    /// Steps until both nodes are through the handshake with each other.
    fn wait_established(&mut self) {
        self.step_until("connected", |sim| {
            (0..2u8).all(|i| {
                let engine = sim.nodes[i as usize].engine.as_ref().unwrap();
                engine.repl_state(1 - i) == Some(ReplState::Established)
            })
        });
    }

    /// Runs an administrative command that must succeed (`what` names the
    /// failure).
    fn admin_ok(&mut self, id: u8, command: Admin, what: &str) {
        let rid = self.admin(id, command);
        if !self.wait_admin(id, rid) {
            self.fail(what);
        }
    }

    /// Steps (without faults) until an administrative command is answered.
    fn wait_admin(&mut self, id: u8, rid: u64) -> bool {
        for _ in 0..10_000 {
            if let Some(ok) = self.admin_result(id, rid) {
                return ok;
            }
            self.step(false);
        }
        self.fail(&format!("node {id}: admin {rid} never answered"));
    }

    fn admin_result(&mut self, id: u8, rid: u64) -> Option<bool> {
        let results = &mut self.nodes[id as usize].admin_results;
        let at = results.iter().position(|(r, _)| *r == rid)?;
        Some(results.remove(at).1)
    }

    fn event(&mut self, id: u8, event: Event) {
        let Some(engine) = self.nodes[id as usize].engine.as_mut() else {
            return;
        };
        if matches!(event, Event::Tick) {
            self.ticks[id as usize] += 1;
        }
        let actions = engine.handle(event);
        self.apply(id, actions);
    }

    fn apply(&mut self, id: u8, actions: Vec<Action>) {
        for action in actions {
            let disk_action = matches!(
                action,
                Action::DiskWrite { .. }
                    | Action::DiskRead { .. }
                    | Action::DiskFlush { .. }
                    | Action::PersistMeta(_)
                    | Action::DetachDisk(_)
            );
            if disk_action && self.nodes[id as usize].detached {
                self.fail(&format!("node {id}: {action:?} on a detached disk"));
            }
            match action {
                Action::DetachDisk(meta) => {
                    self.trace.push(format!("node {id}: disk detached"));
                    let node = &mut self.nodes[id as usize];
                    // A failing disk keeps its old meta-data.
                    if !node.failing {
                        let mark = node.disk.completions;
                        node.disk.flush(mark);
                        node.disk.meta = Some(meta);
                    }
                    node.detached = true;
                }
                Action::DiskWrite { token, block, data } => self.nodes[id as usize]
                    .disk_ops
                    .push((token, DiskOp::Write { block, data })),
                Action::DiskRead {
                    token,
                    block,
                    count,
                } => {
                    self.bytes_read[id as usize] += count * BLOCK;
                    self.nodes[id as usize]
                        .disk_ops
                        .push((token, DiskOp::Read { block, count }))
                }
                Action::DiskFlush { token } => {
                    let mark = self.nodes[id as usize].disk.completions;
                    self.nodes[id as usize]
                        .disk_ops
                        .push((token, DiskOp::Flush { mark }))
                }
                Action::PersistMeta(_) if self.nodes[id as usize].failing => {}
                Action::PersistMeta(meta) => {
                    // Meta-data live on the same disk, written with a cache flush:
                    // every write completed before is stable too.
                    let disk = &mut self.nodes[id as usize].disk;
                    let mark = disk.completions;
                    disk.flush(mark);
                    disk.meta = Some(meta);
                }
                Action::Send { peer, message } => {
                    let key = (id.min(peer), id.max(peer));
                    let dir = usize::from(id > peer);
                    if let Some(streams) = self.links.get_mut(&key) {
                        let mut bytes = Vec::new();
                        encode(&message, &mut bytes);
                        streams[dir].push_back(bytes);
                    }
                }
                Action::Connect { peer } => {
                    self.nodes[id as usize].wants.insert(peer);
                }
                Action::Disconnect { peer } => {
                    self.nodes[id as usize].wants.remove(&peer);
                    self.break_link(id, peer, Some(id));
                }
                Action::Complete { id: rid, result } => {
                    if let (Ok(Some(data)), Some(AppRequest::Read { block, acked })) =
                        (&result, self.nodes[id as usize].app.get(&rid))
                    {
                        self.check_read(id, *block, acked.clone(), data);
                    }
                    self.app_completed(id, rid, result.is_ok())
                }
                Action::AdminDone { id: rid, result } => {
                    self.trace
                        .push(format!("node {id}: admin {rid} -> {result:?}"));
                    self.nodes[id as usize]
                        .admin_results
                        .push((rid, result.is_ok()));
                }
                Action::Note(note) => {
                    self.trace.push(format!("node {id}: {note:?}"));
                    self.notes.push(note);
                }
            }
        }
    }

    fn break_link(&mut self, a: u8, b: u8, initiator: Option<u8>) {
        let key = (a.min(b), a.max(b));
        if self.links.remove(&key).is_some() {
            self.trace.push(format!("link {a}-{b} broken"));
            for (node, peer) in [(a, b), (b, a)] {
                if Some(node) != initiator {
                    self.event(node, Event::Disconnected { peer });
                }
            }
        }
    }

    /// Connects nodes that both want it, when the network allows.
    fn make_links(&mut self) {
        if self.partitioned {
            return;
        }
        let (a, b) = (0u8, 1u8);
        let both_up = self.nodes.iter().all(|n| n.engine.is_some());
        if both_up
            && !self.links.contains_key(&(a, b))
            && self.nodes[0].wants.contains(&b)
            && self.nodes[1].wants.contains(&a)
        {
            self.links
                .insert((a, b), [VecDeque::new(), VecDeque::new()]);
            self.trace.push("link 0-1 up".into());
            self.event(a, Event::Connected { peer: b });
            self.event(b, Event::Connected { peer: a });
        }
    }

    fn app_completed(&mut self, id: u8, rid: u64, ok: bool) {
        self.trace
            .push(format!("node {id}: app {rid} completed ok={ok}"));
        let Some(request) = self.nodes[id as usize].app.remove(&rid) else {
            self.fail(&format!("node {id} completed unknown request {rid}"));
        };
        let diskless = self.nodes[id as usize]
            .engine
            .as_ref()
            .is_some_and(|e| e.disk() == replication::DiskState::Diskless);
        match request {
            AppRequest::Write(blocks, issued_diskless) => {
                if ok && (diskless || issued_diskless) && self.diskless_unflushed_since.is_none() {
                    self.diskless_unflushed_since = Some(self.next_id);
                }
                for (block, tag) in blocks {
                    let model = &mut self.model[block as usize];
                    // Requests may complete out of issue order (when a peer goes
                    // away, all waiting ones complete at once); the disk holds the
                    // last issued, and tags grow with issue order.
                    if ok && tag >> 8 > model.acked >> 8 {
                        model.acked = tag;
                    }
                    if ok {
                        model.pending.retain(|t| *t != tag);
                    }
                }
            }
            AppRequest::Read { .. } => {}
            AppRequest::Flush => {
                let snapshot = self.flush_snapshots.remove(&rid).unwrap_or_default();
                if ok
                    && self
                        .diskless_unflushed_since
                        .is_some_and(|since| rid >= since)
                {
                    self.diskless_unflushed_since = None;
                }
                if ok {
                    for (block, model) in self.model.iter_mut().enumerate() {
                        // What was acknowledged when the flush was issued is durable.
                        let acked_then = snapshot[block];
                        // Flushes may complete out of order: durability only grows.
                        if acked_then >> 8 > model.flushed >> 8 {
                            model.flushed = acked_then;
                            // Tags issued after the flush began stay allowed.
                            if let Some(pos) =
                                model.since_flush.iter().position(|t| *t == acked_then)
                            {
                                model.since_flush.drain(..=pos);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A read returns, for each block, what was acknowledged when it was
    /// issued or a write to that block issued after that one: never older
    /// data, never another block's. (What a test wrote behind the engine's
    /// back, or nothing, is older than any write.)
    fn check_read(&mut self, id: u8, block: u64, acked: Vec<u64>, data: &[u8]) {
        self.reads_checked += 1;
        if self.nodes[id as usize]
            .engine
            .as_ref()
            .is_some_and(|e| e.disk() == replication::DiskState::Diskless)
        {
            self.remote_reads_checked += 1;
        }
        if data.len() != acked.len() * BLOCK_SIZE {
            self.fail(&format!(
                "node {id}: a read of {} blocks returned {} bytes",
                acked.len(),
                data.len()
            ));
        }
        for (i, (chunk, then)) in data.chunks(BLOCK_SIZE).zip(acked).enumerate() {
            let b = block + i as u64;
            let got = tag_of(chunk);
            let model = &self.model[b as usize];
            let newer = model.issued.contains(&got)
                && (!model.issued.contains(&then) || got >> 8 > then >> 8);
            if got != then && !newer {
                self.fail(&format!(
                    "node {id}: read block {b} = {got:#x}; acknowledged when read {then:#x}"
                ));
            }
        }
    }

    fn primaries(&self) -> Vec<u8> {
        (0..2u8)
            .filter(|&i| {
                self.nodes[i as usize]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.role() == Role::Primary)
            })
            .collect()
    }

    fn app_io(&mut self, id: u8) {
        if self.nodes[id as usize].app.len() >= 8 {
            return;
        }
        let rid = self.next_id;
        self.next_id += 1;
        if self.rng.chance(100) {
            self.flush_snapshots
                .insert(rid, self.model.iter().map(|m| m.acked).collect());
            self.trace.push(format!("node {id}: app flush {rid}"));
            self.nodes[id as usize].app.insert(rid, AppRequest::Flush);
            self.event(id, Event::Flush { id: rid });
            return;
        }
        let count = if self.mode == Mode::DualPrimary {
            1
        } else {
            1 + self.rng.below(3)
        };
        // (With two Primaries, or a split brain, there is no one order of
        // writes for a read to be checked against.)
        let one_order = !matches!(self.mode, Mode::DualPrimary | Mode::SplitBrain);
        if one_order && self.rng.chance(5) {
            let block = self.rng.below(BLOCKS - count);
            let acked = (block..block + count)
                .map(|b| self.model[b as usize].acked)
                .collect();
            self.trace
                .push(format!("node {id}: app read {rid} {block}+{count}"));
            let read = AppRequest::Read { block, acked };
            self.nodes[id as usize].app.insert(rid, read);
            self.event(
                id,
                Event::Read {
                    id: rid,
                    block,
                    count,
                },
            );
            return;
        }
        let block = if self.mode == Mode::DualPrimary {
            // Each Primary mostly writes its own blocks (as a cluster filesystem
            // under its locks does), and now and then a few shared ones.
            if self.rng.chance(100) {
                self.rng.below(4)
            } else {
                4 + 2 * self.rng.below((BLOCKS - 4) / 2) + u64::from(id)
            }
        } else {
            self.rng.below(BLOCKS - count)
        };
        let mut data = Vec::with_capacity(count as usize * BLOCK_SIZE);
        let mut written = Vec::new();
        for b in block..block + count {
            let tag = self.next_tag << 8 | u64::from(id);
            self.next_tag += 1;
            data.extend_from_slice(&block_data(tag));
            written.push((b, tag));
            self.written.insert(b);
            let model = &mut self.model[b as usize];
            model.pending.push(tag);
            model.since_flush.push(tag);
            model.issued.insert(tag);
        }
        self.trace
            .push(format!("node {id}: app write {rid} {written:x?}"));
        let issued_diskless = self.nodes[id as usize]
            .engine
            .as_ref()
            .is_some_and(|e| e.disk() == replication::DiskState::Diskless);
        self.nodes[id as usize]
            .app
            .insert(rid, AppRequest::Write(written, issued_diskless));
        self.event(
            id,
            Event::Write {
                id: rid,
                block,
                data: data.into(),
            },
        );
    }

    fn complete_disk_op(&mut self, id: u8) {
        let node = &mut self.nodes[id as usize];
        if node.disk_ops.is_empty() {
            return;
        }
        let at = (self.rng.below(node.disk_ops.len() as u64)) as usize;
        let (token, op) = node.disk_ops.swap_remove(at);
        let result = match op {
            _ if node.failing => Err(()),
            DiskOp::Write { block, data } => {
                for (i, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
                    node.disk.write(block + i as u64, tag_of(chunk));
                }
                Ok(None)
            }
            DiskOp::Read { block, count } => {
                let mut data = Vec::with_capacity(count as usize * BLOCK_SIZE);
                for b in block..block + count {
                    data.extend_from_slice(&block_data(node.disk.read(b)));
                }
                Ok(Some(data.into()))
            }
            DiskOp::Flush { mark } => {
                node.disk.flush(mark);
                Ok(None)
            }
        };
        self.event(id, Event::DiskDone { token, result });
    }

    fn deliver(&mut self) {
        let keys: Vec<((u8, u8), usize)> = self
            .links
            .iter()
            .flat_map(|(k, s)| (0..2).filter(|d| !s[*d].is_empty()).map(move |d| (*k, d)))
            .collect();
        if keys.is_empty() {
            return;
        }
        let (key, dir) = keys[self.rng.below(keys.len() as u64) as usize];
        let bytes = self.links.get_mut(&key).unwrap()[dir].pop_front().unwrap();
        let (message, used) = decode(&bytes).unwrap_or_else(|e| self.fail(&format!("codec: {e}")));
        assert_eq!(used, bytes.len());
        let (from, to) = if dir == 0 {
            (key.0, key.1)
        } else {
            (key.1, key.0)
        };
        match &message {
            replication::Message::Hello(_)
            | replication::Message::OvReply { .. }
            | replication::Message::OvResult { .. }
            | replication::Message::VerifyDone { .. }
            | replication::Message::SyncDone { .. }
            | replication::Message::SyncStart { .. }
            | replication::Message::ResyncAck { .. } => {
                self.trace.push(format!("{from} -> {to}: {message:?}"))
            }
            replication::Message::ResyncData { block, data } => self.trace.push(format!(
                "{from} -> {to}: ResyncData {block}+{} {:x?}",
                data.len() / BLOCK_SIZE,
                data.chunks(BLOCK_SIZE).map(tag_of).collect::<Vec<_>>()
            )),
            replication::Message::Data { block, data, .. } => self.trace.push(format!(
                "{from} -> {to}: Data {block}+{}",
                data.len() / BLOCK_SIZE
            )),
            _ => {}
        }
        self.event(
            to,
            Event::Received {
                peer: from,
                message,
            },
        );
    }

    fn crash(&mut self, id: u8) {
        self.trace.push(format!("node {id} crashes"));
        self.crashes += 1;
        let unflushed_on_this_disk_only =
            self.nodes[1 - id as usize]
                .engine
                .as_ref()
                .is_some_and(|e| {
                    e.role() == Role::Primary
                        && (e.disk() == replication::DiskState::Diskless
                            || (e.disk() == replication::DiskState::Inconsistent
                                && self.diskless_unflushed_since.is_some()))
                });
        if unflushed_on_this_disk_only {
            // This disk held the only copy of what a diskless Primary wrote
            // (also if it has attached a disk since, still a sync target,
            // whose own writes wait for this disk's flush): what was not
            // flushed may be gone.
            self.forget_unflushed();
        }
        let peer = 1 - id;
        self.break_link(id, peer, Some(id));
        let node = &mut self.nodes[id as usize];
        node.engine = None;
        node.disk_ops.clear();
        node.wants.clear();
        node.app.clear();
        node.admin_results.clear();
        node.detached = false;
        node.disk.crash(&mut self.rng);
    }

    fn check_roles(&self) {
        if self.config.allow_two_primaries {
            return;
        }
        let both = self.primaries().len() == 2;
        let connected = (0..2u8).all(|i| {
            self.nodes[i as usize]
                .engine
                .as_ref()
                .is_some_and(|e| e.repl_state(1 - i) != Some(ReplState::Off))
        });
        if both && connected {
            self.fail("two connected Primaries");
        }
    }

    /// Protocol C failover: the promoted node must hold every acknowledged write.
    fn check_failover(&self, id: u8) {
        let disk = &self.nodes[id as usize].disk;
        for (block, model) in self.model.iter().enumerate() {
            let have = disk.read(block as u64);
            if have != model.acked && !model.pending.contains(&have) {
                self.fail(&format!(
                    "failover to node {id}: block {block} holds {have:#x}, acknowledged {:#x} (pending {:x?})",
                    model.acked, model.pending
                ));
            }
        }
    }

    fn step(&mut self, faults: bool) {
        self.make_links();
        let r = self.rng.below(100);
        match r {
            0..=39 => self.deliver(),
            40..=74 => {
                let id = self.rng.below(2) as u8;
                self.complete_disk_op(id);
            }
            75..=89 if faults => {
                let primaries = self.primaries();
                if !primaries.is_empty() {
                    let id = primaries[self.rng.below(primaries.len() as u64) as usize];
                    self.app_io(id);
                }
            }
            90..=94 => {
                let id = self.rng.below(2) as u8;
                self.event(id, Event::Tick);
            }
            _ if faults => self.fault(),
            _ => {}
        }
        self.check_roles();
    }

    fn fault(&mut self) {
        let r = self.rng.below(1000);
        match self.mode {
            Mode::Failover | Mode::Protocols | Mode::Detach => {
                if self.mode == Mode::Detach && (300..400).contains(&r) {
                    return self.detach_or_attach(1);
                }
                if self.mode == Mode::Detach && (430..440).contains(&r) {
                    // A disk starts failing: `on-io-error detach` lets it go.
                    // Only while the other disk is UpToDate and in sync: with
                    // no good copy left, only the administrator can choose
                    // what to keep.
                    let id = self.rng.below(2) as u8;
                    let other = &self.nodes[1 - id as usize];
                    let other_disk_works = other.engine.as_ref().is_some_and(|e| {
                        e.disk() == replication::DiskState::UpToDate
                            && e.repl_state(id) == Some(ReplState::Established)
                    }) && !other.failing;
                    let node = &mut self.nodes[id as usize];
                    // It fails under an action in flight, which reports it at
                    // once: a disk failing unnoticed until a later action
                    // could see a partition come and go meanwhile, and the
                    // peer become its sync target: two faults.
                    if other_disk_works
                        && node.engine.is_some()
                        && !node.detached
                        && !node.failing
                        && !node.disk_ops.is_empty()
                    {
                        self.trace.push(format!("node {id}: disk fails"));
                        node.failing = true;
                        let primary = node
                            .engine
                            .as_ref()
                            .is_some_and(|e| e.role() == Role::Primary);
                        self.complete_disk_op(id);
                        if primary && self.config.protocol == Protocol::A {
                            // Protocol A acknowledged writes once sent: those
                            // still on their way are only on this disk.
                            self.forget_unflushed();
                        }
                    }
                    return;
                }
                if self.mode == Mode::Detach && (400..500).contains(&r) {
                    // Node 0 (the Primary) detaches (it goes on with the
                    // peer's disk if the peer has an UpToDate one, else it is
                    // refused), or takes its disk back (as Primary while
                    // connected to an UpToDate peer, or demoted first).
                    return self.detach_or_attach(0);
                }
                if r < 60 {
                    self.break_link(0, 1, None);
                } else if r < 80 {
                    self.partitioned = !self.partitioned;
                    if self.partitioned {
                        self.break_link(0, 1, None);
                    }
                } else if r < 110 {
                    let id = self.rng.below(2) as u8;
                    if self.nodes[id as usize].engine.is_some() {
                        let is_primary = self.primaries().contains(&id);
                        let peer_in_sync =
                            self.nodes[1 - id as usize]
                                .engine
                                .as_ref()
                                .is_some_and(|e| {
                                    e.repl_state(id) == Some(ReplState::Established)
                                        && e.disk() == replication::DiskState::UpToDate
                                });
                        if self.mode != Mode::Failover && is_primary {
                            return;
                        }
                        self.crash(id);
                        if is_primary && peer_in_sync {
                            self.failover(1 - id);
                        } else if is_primary {
                            // No failover possible: what was not flushed may be gone.
                            self.forget_unflushed();
                        }
                    }
                } else if r < 300 {
                    for id in 0..2u8 {
                        if self.nodes[id as usize].engine.is_none() && self.rng.chance(300) {
                            self.trace.push(format!("node {id} restarts"));
                            self.start(id);
                        }
                    }
                }
            }
            Mode::SplitBrain => {
                if r < 20 && !self.partitioned {
                    self.partitioned = true;
                    self.break_link(0, 1, None);
                } else if r < 40 && self.partitioned {
                    // Both sides believe they are alone: promote the Secondary.
                    let secondary = (0..2u8).find(|i| !self.primaries().contains(i));
                    if let Some(s) = secondary {
                        self.admin(s, Admin::Primary { force: false });
                    }
                } else if r < 50 {
                    self.partitioned = false;
                }
            }
            Mode::DualPrimary => {}
            Mode::Verify => {
                if !self.verify_faults {
                    return;
                }
                if r < 60 {
                    self.break_link(0, 1, None);
                } else if r < 80 {
                    self.partitioned = !self.partitioned;
                    if self.partitioned {
                        self.break_link(0, 1, None);
                    }
                }
            }
        }
    }

    fn failover(&mut self, id: u8) {
        let rid = self.admin(id, Admin::Primary { force: false });
        match self.admin_result(id, rid) {
            Some(true) => {}
            other => self.fail(&format!(
                "failover promotion of node {id} failed: {other:?}"
            )),
        }
        self.check_failover(id);
        self.failovers += 1;
        // The new Primary's view is now the truth; writes of the dead Primary
        // still queued here may yet land (never acknowledged: fine).
        let mut in_flight: HashMap<u64, Vec<u64>> = HashMap::new();
        for (_, op) in &self.nodes[id as usize].disk_ops {
            if let DiskOp::Write { block, data } = op {
                for (i, chunk) in data.chunks(BLOCK_SIZE).enumerate() {
                    in_flight
                        .entry(block + i as u64)
                        .or_default()
                        .push(tag_of(chunk));
                }
            }
        }
        for (block, model) in self.model.iter_mut().enumerate() {
            let have = self.nodes[id as usize].disk.read(block as u64);
            model.acked = have;
            // Writes the dead Primary had sent may still be queued here (in the
            // engine or at the disk): they stay possible.
            model
                .pending
                .extend(in_flight.remove(&(block as u64)).unwrap_or_default());
        }
    }

    /// The Primary crashed without a failover: unflushed acknowledged writes may be
    /// lost (that is what the application's flushes are for).
    fn forget_unflushed(&mut self) {
        for model in &mut self.model {
            model.pending.extend(model.since_flush.iter().copied());
            model.pending.push(model.flushed);
            model.pending.push(model.acked);
            model.acked = model.flushed;
        }
    }

    /// Stops faults, brings everything back and waits for the replicas to agree.
    fn heal(&mut self) {
        self.partitioned = false;
        for id in 0..2u8 {
            if self.nodes[id as usize].engine.is_none() {
                self.trace.push(format!("node {id} restarts (heal)"));
                self.start(id);
            }
        }
        let mut resolved_split_brain = false;
        for round in 0..200_000 {
            for id in 0..2u8 {
                if self.nodes[id as usize].detached {
                    self.detach_or_attach(id);
                }
            }
            // Split brain: the administrator discards the newer Primary's data.
            let standalone: Vec<u8> = (0..2u8)
                .filter(|&i| {
                    self.nodes[i as usize]
                        .engine
                        .as_ref()
                        .is_some_and(|e| e.conn_state(1 - i) == Some(ConnState::StandAlone))
                })
                .collect();
            if !standalone.is_empty() {
                if self.mode != Mode::SplitBrain || resolved_split_brain {
                    self.fail(&format!(
                        "nodes {standalone:?} stand alone: {:?}",
                        self.notes.last()
                    ));
                }
                let settled = (0..2usize).all(|i| {
                    let n = &self.nodes[i];
                    n.app.is_empty()
                        && n.disk_ops.is_empty()
                        && n.engine.as_ref().unwrap().is_idle()
                });
                if settled {
                    resolved_split_brain = true;
                    self.resolve_split_brain();
                }
            }
            if self.converged() {
                return self.check_converged();
            }
            self.step(false);
            if round % 50 == 0 {
                for id in 0..2u8 {
                    self.event(id, Event::Tick);
                }
            }
        }
        self.fail("did not converge after faults stopped");
    }

    fn resolve_split_brain(&mut self) {
        // Node 1 (promoted during the partition) gives up its data.
        let victim = 1u8;
        if self.primaries().contains(&victim) {
            let rid = self.admin(victim, Admin::Secondary);
            if self.admin_result(victim, rid) != Some(true) {
                self.fail("the victim could not become Secondary");
            }
        }
        self.admin(
            victim,
            Admin::Connect {
                peer: 0,
                discard_my_data: true,
            },
        );
        self.admin(
            0,
            Admin::Connect {
                peer: 1,
                discard_my_data: false,
            },
        );
        // The survivor's data are the truth.
        for (block, model) in self.model.iter_mut().enumerate() {
            model.acked = self.nodes[0].disk.read(block as u64);
            model.pending.clear();
            model.flushed = model.acked;
            model.since_flush.clear();
        }
    }

    fn converged(&self) -> bool {
        self.links
            .values()
            .all(|s| s[0].is_empty() && s[1].is_empty())
            && self.nodes.iter().enumerate().all(|(i, n)| {
                let e = n.engine.as_ref().unwrap();
                n.disk_ops.is_empty()
                    && n.app.is_empty()
                    && e.is_idle()
                    && e.repl_state(1 - i as u8) == Some(ReplState::Established)
                    && e.disk() == replication::DiskState::UpToDate
                    && e.peer_disk(1 - i as u8) == Some(replication::DiskState::UpToDate)
            })
    }

    fn check_converged(&self) {
        for block in 0..BLOCKS {
            let a = self.nodes[0].disk.read(block);
            let b = self.nodes[1].disk.read(block);
            if self.mode == Mode::DualPrimary {
                // Concurrent writes to one block from both Primaries are detected
                // and reported, not merged: a block may differ only if reported.
                let reported = self
                    .notes
                    .iter()
                    .any(|n| matches!(n, Note::ConcurrentWrite { block: b, .. } if *b == block));
                if a != b && !reported {
                    self.fail(&format!(
                        "replicas differ at block {block} without a report: {a:#x} vs {b:#x}"
                    ));
                }
                continue;
            }
            if a != b {
                self.fail(&format!(
                    "replicas differ at block {block}: {a:#x} vs {b:#x}"
                ));
            }
            let model = &self.model[block as usize];
            let allowed = a == model.acked
                || model.pending.contains(&a)
                || a == model.flushed
                || model.since_flush.contains(&a);
            if !allowed {
                self.fail(&format!(
                    "block {block} holds {a:#x}: neither acknowledged ({:#x}), in flight, nor flushed ({:#x})",
                    model.acked, model.flushed
                ));
            }
            // Without a crash of the Primary, nothing acknowledged may be missing.
            let strict = matches!(self.mode, Mode::Protocols | Mode::Detach)
                || (self.mode == Mode::Failover && self.crashes == 0);
            if strict && a != model.acked && !model.pending.contains(&a) {
                self.fail(&format!(
                    "block {block}: acknowledged {:#x} lost without a crash",
                    model.acked
                ));
            }
        }
    }
}

/// Brings a fresh pair to a running state: node 0 forced Primary, full sync under
/// way; in dual-primary runs node 1 is promoted once in sync.
fn run(seed: u64, mode: Mode, steps: u32) -> Sim {
    let mut sim = Sim::new(seed, mode);
    // Wait for the connection and the handshake.
    sim.wait_established();
    sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
    if mode == Mode::DualPrimary {
        for _ in 0..100_000 {
            if sim.converged() {
                break;
            }
            sim.step(false);
        }
        sim.admin_ok(
            1,
            Admin::Primary { force: false },
            "second primary refused under allow-two-primaries",
        );
    }
    for _ in 0..steps {
        sim.step(true);
    }
    sim.heal();
    sim
}

/// The seeds a test runs: `SIM_SEED=N` runs the one seed N (to replay a failure),
/// `SIM_SEEDS=N` changes how many.
fn seeds(base: u64, share: u64) -> std::ops::Range<u64> {
    if let Some(one) = simkit::replay_seed() {
        return one..one + 1;
    }
    base..base + simkit::seed_count(100, 2000) / share
}

#[test]
fn failover_keeps_every_acknowledged_write() {
    let mut failovers = 0;
    let mut reads = 0;
    for seed in seeds(0, 1) {
        let sim = run(seed, Mode::Failover, 3000);
        failovers += sim.failovers;
        reads += sim.reads_checked;
    }
    assert!(failovers > 0, "no run failed over: the test tests nothing");
    assert!(reads > 0, "no read was checked against the model");
}

#[test]
fn protocols_a_b_c_converge_after_network_faults_and_secondary_crashes() {
    for seed in seeds(1_000_000, 1) {
        run(seed, Mode::Protocols, 3000);
    }
}

#[test]
fn split_brain_is_detected_and_resolved_by_discarding_one_side() {
    let mut detected = 0;
    for seed in seeds(2_000_000, 2) {
        let sim = run(seed, Mode::SplitBrain, 2000);
        detected += sim
            .notes
            .iter()
            .filter(|n| matches!(n, Note::SplitBrain { .. }))
            .count();
    }
    assert!(detected > 0, "no run produced a split brain");
}

#[test]
fn dual_primaries_replicate_each_others_writes_and_report_collisions() {
    let mut conflicts = 0;
    for seed in seeds(3_000_000, 2) {
        let sim = run(seed, Mode::DualPrimary, 2000);
        conflicts += sim
            .notes
            .iter()
            .filter(|n| matches!(n, Note::ConcurrentWrite { .. }))
            .count();
        // Blocks only one side wrote are identical everywhere.
        for block in 4..BLOCKS {
            assert_eq!(
                sim.nodes[0].disk.read(block),
                sim.nodes[1].disk.read(block),
                "seed {seed} block {block}"
            );
        }
    }
    assert!(
        conflicts > 0,
        "no run wrote the same block from both sides at once"
    );
}

impl Sim {
    /// Steps without faults until both nodes are in sync and idle.
    fn settle(&mut self) {
        for _ in 0..200_000 {
            if self.converged() {
                return;
            }
            self.step(false);
        }
        self.fail("did not settle");
    }

    /// Blocks whose data differ between the two disks right now.
    fn divergent(&self) -> HashSet<u64> {
        (0..BLOCKS)
            .filter(|&b| self.nodes[0].disk.read(b) != self.nodes[1].disk.read(b))
            .collect()
    }

    /// Overwrites blocks of node `id`'s disk behind its engine's back.
    fn corrupt(&mut self, id: u8, blocks: &[u64]) {
        let disk = &mut self.nodes[id as usize].disk;
        for &b in blocks {
            disk.volatile.retain(|(_, block, _)| *block != b);
            disk.durable.insert(b, u64::MAX - b);
        }
        if self.primaries().contains(&id) {
            // The Primary's data are the truth a resync copies, corrupted or not.
            for &b in blocks {
                let model = &mut self.model[b as usize];
                model.acked = u64::MAX - b;
                model.flushed = model.acked;
                model.pending.clear();
                model.since_flush.clear();
            }
        }
        self.trace.push(format!("node {id}: corrupted {blocks:?}"));
    }

    fn out_of_sync_blocks(&self, id: u8) -> HashSet<u64> {
        let meta = self.nodes[id as usize].engine.as_ref().unwrap().meta();
        let bitmap = &meta.peers[0].bitmap;
        (0..BLOCKS).filter(|&b| bitmap.get(b)).collect()
    }

    /// Starts a verify on `source` and steps (with app I/O, and faults if the
    /// sim has them) until it ends or is aborted. Returns the blocks the source
    /// found, if it finished.
    fn verify(&mut self, source: u8, alg: VerifyAlg, io: bool) -> Option<HashSet<u64>> {
        let finished_before = self.verify_notes(source);
        self.written.clear();
        let rid = self.admin(
            source,
            Admin::Verify {
                peer: 1 - source,
                alg,
            },
        );
        if self.admin_result(source, rid) != Some(true) {
            self.fail("verify refused while in sync");
        }
        for _ in 0..200_000 {
            let notes = self.verify_notes(source);
            if notes.0 > finished_before.0 {
                let found = self
                    .notes
                    .iter()
                    .rev()
                    .find_map(|n| match n {
                        Note::VerifyFinished { peer, found } if *peer == 1 - source => Some(*found),
                        _ => None,
                    })
                    .unwrap();
                let blocks = self.out_of_sync_blocks(source);
                // (Faults also mark blocks: writes a broken link did not carry.)
                if !self.verify_faults && blocks.len() as u64 != found {
                    self.fail(&format!(
                        "verify reported {found} blocks, the bitmap holds {blocks:?}"
                    ));
                }
                return Some(blocks);
            }
            if notes.1 > finished_before.1 {
                return None;
            }
            self.step(io);
        }
        self.fail("verify never ended");
    }

    /// (verifies finished, verifies aborted) by `source` with its peer.
    fn verify_notes(&self, source: u8) -> (usize, usize) {
        let peer = 1 - source;
        let finished = self
            .notes
            .iter()
            .filter(|n| matches!(n, Note::VerifyFinished { peer: p, .. } if *p == peer))
            .count();
        let aborted = self
            .notes
            .iter()
            .filter(|n| matches!(n, Note::VerifyAborted { .. }))
            .count();
        (finished, aborted)
    }

    /// disconnect + connect on node 0: the handshake resyncs what verify marked.
    fn reconnect(&mut self) {
        let rid = self.admin(0, Admin::Disconnect { peer: 1 });
        self.wait_admin(0, rid);
        let rid = self.admin(
            0,
            Admin::Connect {
                peer: 1,
                discard_my_data: false,
            },
        );
        self.wait_admin(0, rid);
    }
}

/// A pair in sync (node 0 Primary) with a few blocks of one replica corrupted.
fn corrupted_pair(seed: u64, faults: bool) -> (Sim, HashSet<u64>) {
    let mut sim = Sim::new(seed, Mode::Verify);
    sim.verify_faults = faults;
    sim.wait_established();
    sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
    sim.settle();
    let victim = sim.rng.below(2) as u8;
    let count = 1 + sim.rng.below(5);
    let blocks: Vec<u64> = (0..count).map(|_| sim.rng.below(BLOCKS)).collect();
    sim.corrupt(victim, &blocks);
    let divergent = sim.divergent();
    (sim, divergent)
}

#[test]
fn verify_finds_exactly_the_corrupted_blocks_and_reconnect_repairs_them() {
    let mut found_any = 0;
    for seed in seeds(4_000_000, 4) {
        let (mut sim, divergent) = corrupted_pair(seed, false);
        let source = sim.rng.below(2) as u8;
        let alg = VerifyAlg::ALL[sim.rng.below(4) as usize];
        // Quiet: exactly the divergent blocks.
        let found = sim
            .verify(source, alg, false)
            .unwrap_or_else(|| sim.fail("verify aborted without faults"));
        if found != divergent {
            sim.fail(&format!("verify found {found:?}, divergent {divergent:?}"));
        }
        sim.settle();
        if sim.out_of_sync_blocks(1 - source) != divergent {
            sim.fail("the target's bitmap differs from the source's");
        }
        found_any += found.len();
        sim.reconnect();
        sim.heal();
        if !sim.divergent().is_empty() {
            sim.fail("replicas differ after the resync");
        }
        // Under application writes: never a block that was in sync, and every
        // corrupted block nobody overwrote.
        let (mut sim, divergent) = corrupted_pair(seed + 1_000_000_000, false);
        let source = sim.rng.below(2) as u8;
        let found = sim
            .verify(source, alg, true)
            .unwrap_or_else(|| sim.fail("verify aborted without faults"));
        let must: HashSet<u64> = divergent.difference(&sim.written).copied().collect();
        if !found.is_subset(&divergent) || !must.is_subset(&found) {
            sim.fail(&format!(
                "verify under writes found {found:?}; divergent {divergent:?}, written {:?}",
                sim.written
            ));
        }
        sim.settle();
        sim.reconnect();
        sim.heal();
    }
    assert!(found_any > 0);
}

/// `invalidate` on the Secondary (or `invalidate-remote` on the Primary)
/// overwrites every block of the Secondary with the Primary's, under
/// application writes; the Primary refuses to be invalidated.
#[test]
fn invalidate_resyncs_every_block_of_the_secondary_from_the_primary() {
    for seed in seeds(6_000_000, 4) {
        let (mut sim, _) = corrupted_pair(seed, false);
        let rid = sim.admin(0, Admin::Invalidate);
        if sim.wait_admin(0, rid) {
            sim.fail("the Primary accepted invalidate");
        }
        let rid = sim.admin(1, Admin::InvalidateRemote { peer: 0 });
        if sim.wait_admin(1, rid) {
            sim.fail("invalidate-remote of the Primary was accepted");
        }
        let (id, command) = if sim.rng.chance(2) {
            (1, Admin::Invalidate)
        } else {
            (0, Admin::InvalidateRemote { peer: 1 })
        };
        let full_syncs = |sim: &Sim| {
            sim.notes
                .iter()
                .filter(|n| {
                    matches!(n, Note::SyncStarted { peer: 1, source: true, blocks } if *blocks == BLOCKS)
                })
                .count()
        };
        let before = full_syncs(&sim);
        let rid = sim.admin(id, command);
        if !sim.wait_admin(id, rid) {
            sim.fail("invalidate refused while in sync");
        }
        // Application writes on the Primary while the resync runs.
        for _ in 0..2_000 {
            sim.step(true);
        }
        sim.settle();
        if full_syncs(&sim) != before + 1 {
            sim.fail("no full resync of node 1 started");
        }
        let divergent = sim.divergent();
        if !divergent.is_empty() {
            sim.fail(&format!("replicas differ after invalidate: {divergent:?}"));
        }
    }
}

/// `new-current-uuid --clear-bitmap` on fresh disks: both UpToDate at once,
/// nothing synced, and the pair then replicates as usual; a second one is
/// refused, and a plain `new-current-uuid` moves both to a new generation.
#[test]
fn new_current_uuid_clear_bitmap_skips_the_initial_sync() {
    for seed in seeds(7_000_000, 4) {
        let mut sim = Sim::new(seed, Mode::Verify);
        sim.wait_established();
        let id = sim.rng.below(2) as u8;
        sim.admin_ok(
            id,
            Admin::NewCurrentUuid { clear_bitmap: true },
            "new-current-uuid --clear-bitmap refused on fresh disks",
        );
        sim.settle();
        if sim
            .notes
            .iter()
            .any(|n| matches!(n, Note::SyncStarted { .. }))
        {
            sim.fail("a sync started");
        }
        let uuids = |sim: &Sim| {
            (0..2)
                .map(|i| sim.nodes[i].engine.as_ref().unwrap().current_uuid())
                .collect::<Vec<_>>()
        };
        let first = uuids(&sim);
        if first[0] != first[1] {
            sim.fail(&format!("current UUIDs differ: {first:x?}"));
        }
        let rid = sim.admin(1 - id, Admin::NewCurrentUuid { clear_bitmap: true });
        if sim.wait_admin(1 - id, rid) {
            sim.fail("a second --clear-bitmap was accepted");
        }
        sim.admin_ok(
            0,
            Admin::Primary { force: false },
            "primary refused after the skipped sync",
        );
        for _ in 0..2_000 {
            sim.step(true);
        }
        sim.settle();
        let rid = sim.admin(
            0,
            Admin::NewCurrentUuid {
                clear_bitmap: false,
            },
        );
        if !sim.wait_admin(0, rid) {
            sim.fail("new-current-uuid refused on the Primary");
        }
        sim.settle();
        let second = uuids(&sim);
        if second[0] != second[1] || second[0] == first[0] {
            sim.fail(&format!(
                "after new-current-uuid: {second:x?}, before {first:x?}"
            ));
        }
        if !sim.divergent().is_empty() {
            sim.fail("replicas differ");
        }
    }
}

/// `pause-sync` on either node holds a full sync where it is, across a
/// reconnect; `resume-sync` lets it finish with identical replicas.
#[test]
fn pause_sync_holds_the_resync_until_resume_sync() {
    for seed in seeds(8_000_000, 4) {
        let mut sim = Sim::new(seed, Mode::Verify);
        sim.wait_established();
        let pauser = sim.rng.below(2) as u8;
        let command = Admin::PauseSync {
            peer: 1 - pauser,
            paused: true,
        };
        sim.admin_ok(pauser, command, "pause-sync refused");
        let expected = if pauser == 0 {
            (true, false)
        } else {
            (false, true)
        };
        // (A pause on the target reaches the source a message later.)
        sim.step_until("saw the pause", |sim| {
            sim.nodes[0].engine.as_ref().unwrap().resync_paused(1) == Some(expected)
        });
        sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
        let left = |sim: &Sim| sim.nodes[0].engine.as_ref().unwrap().out_of_sync(1);
        let start = left(&sim);
        for round in 0..2 {
            for _ in 0..3_000 {
                sim.step(false);
            }
            let engine = sim.nodes[0].engine.as_ref().unwrap();
            let paused = engine.resync_paused(1);
            if engine.repl_state(1) != Some(ReplState::SyncSource) || paused != Some(expected) {
                sim.fail(&format!(
                    "round {round}: {:?}, paused {paused:?}",
                    engine.repl_state(1)
                ));
            }
            if left(&sim) != start {
                sim.fail(&format!(
                    "the paused sync moved: {start:?} -> {:?}",
                    left(&sim)
                ));
            }
            if round == 0 {
                // The pause outlives the connection.
                sim.reconnect();
            }
        }
        let command = Admin::PauseSync {
            peer: 1 - pauser,
            paused: false,
        };
        sim.admin_ok(pauser, command, "resume-sync refused");
        sim.settle();
        if !sim.divergent().is_empty() {
            sim.fail("replicas differ after the resumed sync");
        }
    }
}

/// `outdate` is refused on the Primary and while connected; on a
/// disconnected Secondary it bars promotion without `--force`, and the
/// reconnect to its UpToDate peer (nothing written meanwhile) makes it
/// UpToDate again with nothing copied: at once if the peer is Secondary too,
/// by an empty bitmap resync if it is Primary (it started a new generation
/// when the connection went).
#[test]
fn outdate_holds_a_disconnected_secondary_back_until_it_reconnects() {
    for seed in seeds(9_000_000, 4) {
        let mut sim = Sim::new(seed, Mode::Verify);
        sim.wait_established();
        sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
        sim.settle();
        for id in [0, 1] {
            let rid = sim.admin(id, Admin::Outdate);
            if sim.wait_admin(id, rid) {
                sim.fail(&format!("node {id} outdated while connected or Primary"));
            }
        }
        let primary_stays = sim.rng.chance(2);
        if !primary_stays {
            sim.admin_ok(0, Admin::Secondary, "secondary refused");
        }
        sim.admin_ok(1, Admin::Disconnect { peer: 0 }, "disconnect refused");
        sim.admin_ok(1, Admin::Outdate, "outdate refused while disconnected");
        let disk = sim.nodes[1].engine.as_ref().unwrap().disk();
        if disk != replication::DiskState::Outdated {
            sim.fail(&format!("outdate left the disk {disk:?}"));
        }
        let rid = sim.admin(1, Admin::Primary { force: false });
        if sim.wait_admin(1, rid) {
            sim.fail("an Outdated node became Primary without --force");
        }
        let syncs = sim.notes.len();
        let command = Admin::Connect {
            peer: 0,
            discard_my_data: false,
        };
        sim.admin_ok(1, command, "connect refused");
        sim.settle();
        let resyncs: Vec<u64> = sim.notes[syncs..]
            .iter()
            .filter_map(|n| match n {
                Note::SyncStarted { blocks, .. } => Some(*blocks),
                _ => None,
            })
            .collect();
        let expected = if primary_stays { vec![0, 0] } else { vec![] };
        if resyncs != expected {
            sim.fail(&format!("resyncs after the reconnect: {resyncs:?}"));
        }
    }
}

#[test]
fn verify_under_message_loss_and_partitions_stops_cleanly_and_a_later_one_repairs() {
    let mut aborted = 0;
    for seed in seeds(5_000_000, 4) {
        let (mut sim, _) = corrupted_pair(seed, true);
        let source = sim.rng.below(2) as u8;
        let alg = VerifyAlg::ALL[sim.rng.below(4) as usize];
        if sim.verify(source, alg, true).is_none() {
            aborted += 1;
        }
        for _ in 0..500 {
            sim.step(true);
        }
        sim.partitioned = false;
        sim.verify_faults = false;
        sim.settle();
        // What the first verify marked is resynced by a reconnect.
        sim.reconnect();
        sim.settle();
        // Whatever the faults left: a quiet verify finds exactly what differs.
        let divergent = sim.divergent();
        let found = sim
            .verify(0, alg, false)
            .unwrap_or_else(|| sim.fail("verify aborted without faults"));
        if found.difference(&divergent).next().is_some() || !divergent.is_subset(&found) {
            sim.fail(&format!("found {found:?}, divergent {divergent:?}"));
        }
        sim.reconnect();
        sim.heal();
        if !sim.divergent().is_empty() {
            sim.fail("replicas differ after the resync");
        }
    }
    assert!(aborted > 0, "no verify was cut by a fault");
}

impl Sim {
    /// Detaches node `id`'s disk, or attaches it again (with the meta-data the
    /// detach left on it).
    fn detach_or_attach(&mut self, id: u8) {
        if self.nodes[id as usize].engine.is_none() {
            return;
        }
        if self.nodes[id as usize].detached {
            let primary = self.primaries().contains(&id);
            if primary {
                match self.rng.below(3) {
                    // Demoted instead (refused while its I/O is under way:
                    // tried again later).
                    0 => {
                        self.admin(id, Admin::Secondary);
                        return;
                    }
                    // Diskless a while longer.
                    1 => return,
                    _ => {}
                }
            }
            // A Primary attaches only with a connected UpToDate peer to
            // resync from (as far as it knows); a Secondary always may.
            let no_source = self.nodes[id as usize]
                .engine
                .as_ref()
                .unwrap()
                .attach_refused()
                == Some(replication::AdminError::PrimaryAttach);
            let meta = self.nodes[id as usize].disk.meta.clone().expect("meta");
            // Repaired, with what it held (the attach writes its meta-data).
            let failing = std::mem::take(&mut self.nodes[id as usize].failing);
            self.nodes[id as usize].detached = false;
            let rid = self.admin(
                id,
                Admin::Attach {
                    meta: Box::new(meta),
                },
            );
            let result = self.admin_result(id, rid);
            if result != Some(true) {
                self.nodes[id as usize].detached = true;
                self.nodes[id as usize].failing = failing;
            }
            match result {
                Some(true) => {
                    if primary {
                        self.trace.push(format!("node {id}: attached as Primary"));
                    }
                }
                Some(false) if primary && no_source => {}
                other => self.fail(&format!(
                    "attach of a detached disk (Primary: {primary}) gave {other:?}"
                )),
            }
        } else {
            // Answered once the local I/O in flight is done (or refused).
            self.admin(id, Admin::Detach);
        }
    }
}

#[test]
fn detach_and_attach_under_faults_converge() {
    let (mut detaches, mut primary_detaches, mut remote_reads) = (0, 0, 0);
    let (mut disk_failures, mut primary_attaches) = (0, 0);
    for seed in seeds(6_000_000, 2) {
        let sim = run(seed, Mode::Detach, 3000);
        detaches += sim
            .trace
            .iter()
            .filter(|t| t.ends_with("disk detached"))
            .count();
        primary_detaches += sim
            .trace
            .iter()
            .filter(|t| *t == "node 0: disk detached")
            .count();
        remote_reads += sim.remote_reads_checked;
        primary_attaches += sim
            .trace
            .iter()
            .filter(|t| t.ends_with("attached as Primary"))
            .count();
        disk_failures += sim
            .notes
            .iter()
            .filter(|n| matches!(n, Note::DiskFailed))
            .count();
    }
    assert!(detaches > 0, "no run detached a disk");
    // Node 0 is the Primary until the heal.
    assert!(primary_detaches > 0, "no Primary went diskless");
    assert!(remote_reads > 0, "no diskless Primary read from its peer");
    assert!(disk_failures > 0, "no disk failed (on-io-error detach)");
    assert!(primary_attaches > 0, "no diskless Primary attached a disk");
}

/// A pair in `Mode::Detach`, node 0 Primary, in sync, every epoch closed
/// (nothing left unconfirmed).
fn detach_pair_in_sync(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, Mode::Detach);
    sim.wait_established();
    sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
    sim.settle();
    for id in 0..2u8 {
        sim.event(id, Event::Tick);
    }
    sim.settle();
    sim
}

#[test]
fn attach_resyncs_exactly_the_blocks_written_while_detached() {
    for seed in seeds(7_000_000, 4) {
        let mut sim = detach_pair_in_sync(seed);
        sim.admin_ok(1, Admin::Detach, "detach of the Secondary refused");
        if sim.nodes[1].engine.as_ref().unwrap().disk() != replication::DiskState::Diskless {
            sim.fail("not Diskless after detach");
        }
        // A Primary keeps its disk while no peer has an UpToDate one (here
        // it may ask before it hears of the detach: the peer says no).
        let rid = sim.admin(0, Admin::Detach);
        if sim.wait_admin(0, rid) {
            sim.fail("a Primary detached with no UpToDate peer");
        }
        sim.written.clear();
        let writes = 1 + sim.rng.below(6);
        for _ in 0..writes {
            sim.app_io(0);
            for _ in 0..2000 {
                if sim.nodes[0].app.is_empty() {
                    break;
                }
                sim.step(false);
            }
        }
        let notes_before = sim.notes.len();
        sim.detach_or_attach(1);
        sim.heal();
        let resynced: Vec<u64> = sim.notes[notes_before..]
            .iter()
            .filter_map(|n| match n {
                Note::SyncStarted {
                    peer: 1,
                    source: true,
                    blocks,
                } => Some(*blocks),
                _ => None,
            })
            .collect();
        if resynced != [sim.written.len() as u64] {
            sim.fail(&format!(
                "resyncs {resynced:?} after writing {:?} while detached",
                sim.written
            ));
        }
        // And exactly those were copied: sent by one side, written by the other.
        let copied: Vec<(u8, u64)> = sim.notes[notes_before..]
            .iter()
            .filter_map(|n| match n {
                Note::SyncFinished { peer, copied } => Some((*peer, *copied)),
                _ => None,
            })
            .collect();
        let n = sim.written.len() as u64;
        if copied.len() != 2 || !copied.contains(&(1, n)) || !copied.contains(&(0, n)) {
            sim.fail(&format!(
                "copied {copied:?} after writing {n} blocks while detached"
            ));
        }
    }
}

/// A Primary detaches its disk, writes to its peer's, attaches the disk
/// again and resyncs it as target while its application goes on reading
/// and writing, under the mode's faults, and in some runs crashes midway
/// (it comes back as a Secondary whose resync goes on): every read sees
/// what was acknowledged, and the replicas converge.
#[test]
fn a_diskless_primary_attaches_and_resyncs_under_io_and_faults() {
    let (mut attached, mut reads_as_target, mut target_crashes) = (0, 0, 0);
    for seed in seeds(10_000_000, 4) {
        let mut sim = detach_pair_in_sync(seed);
        sim.admin_ok(0, Admin::Detach, "detach of the Primary refused");
        for _ in 0..1 + sim.rng.below(24) {
            sim.app_io(0);
            for _ in 0..2000 {
                if sim.nodes[0].app.is_empty() {
                    break;
                }
                sim.step(false);
            }
        }
        let meta = sim.nodes[0].disk.meta.clone().expect("meta");
        sim.nodes[0].detached = false;
        let command = Admin::Attach {
            meta: Box::new(meta),
        };
        sim.admin_ok(0, command, "attach of the Primary's disk refused");
        attached += 1;
        let mut crash = sim.rng.chance(333);
        for _ in 0..400 {
            let target = sim.nodes[0]
                .engine
                .as_ref()
                .is_some_and(|e| e.repl_state(1) == Some(ReplState::SyncTarget));
            if target && crash && sim.rng.chance(500) {
                crash = false;
                // No failover: what was not flushed may be gone.
                sim.crash(0);
                sim.forget_unflushed();
                target_crashes += 1;
            }
            let before = sim.reads_checked;
            if sim.rng.chance(500) && sim.nodes[0].engine.is_some() {
                sim.app_io(0);
            }
            sim.step(true);
            if target {
                reads_as_target += sim.reads_checked - before;
            }
        }
        sim.heal();
    }
    assert!(attached > 0);
    assert!(target_crashes > 0, "no Primary crashed as sync target");
    assert!(
        reads_as_target > 0,
        "no read was checked while the Primary was sync target"
    );
}

#[test]
fn a_rate_limited_resync_reads_no_more_than_its_budget_and_finishes() {
    for seed in seeds(9_000_000, 4) {
        let mut sim = Sim::new(seed, Mode::Failover);
        sim.wait_established();
        let blocks_per_tick = 1 + sim.rng.below(8);
        let budget = blocks_per_tick * BLOCK;
        for id in 0..2u8 {
            let command = Admin::Options {
                resync_budget_per_tick: Some(budget),
                on_io_error: OnIoError::Detach,
            };
            sim.admin_ok(id, command, "resync rate refused");
        }
        let (read_before, ticks_before) = (sim.bytes_read[0], sim.ticks[0]);
        // Fresh disks: the whole device goes from node 0 to node 1, and the
        // application does nothing meanwhile, so node 0 reads only for it.
        sim.admin_ok(0, Admin::Primary { force: true }, "primary --force failed");
        for _ in 0..200_000 {
            if sim.converged() {
                break;
            }
            sim.step(false);
            let read = sim.bytes_read[0] - read_before;
            let granted = budget * (sim.ticks[0] - ticks_before + 1);
            // A run never exceeds one tick's budget, so the debt it can leave
            // is less than that.
            if read > granted + budget {
                sim.fail(&format!(
                    "read {read} bytes for the resync with {granted} granted over {} ticks",
                    sim.ticks[0] - ticks_before
                ));
            }
        }
        if !sim.converged() {
            sim.fail("a rate-limited resync never finished");
        }
        sim.check_converged();
        let ticks = sim.ticks[0] - ticks_before;
        if ticks + 2 < BLOCKS / blocks_per_tick {
            sim.fail(&format!(
                "{BLOCKS} blocks at {blocks_per_tick} a tick in only {ticks} ticks"
            ));
        }
        // Lifting the limit lets the next resync go at full speed.
        sim.admin_ok(
            0,
            Admin::Options {
                resync_budget_per_tick: None,
                on_io_error: OnIoError::Detach,
            },
            "limit not lifted",
        );
    }
}
