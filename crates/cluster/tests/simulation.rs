//! Deterministic simulation of the o2cb stack (membership + DLM) on 2–5 nodes.
//!
//! One thread, one seeded RNG, time in milliseconds advanced in 100 ms steps. The
//! network is a FIFO stream per connection with random delays (so messages on
//! different connections overtake each other); connections break (everything in
//! flight is lost, both ends told) and partitions drop traffic silently (ends notice
//! by the idle timeout). The heartbeat region is shared memory: a node's writes are
//! seen by every node at its next read. Nodes crash and restart with a new
//! generation; fenced nodes are restarted later, as an operator would. Every frame
//! and every DLM message goes through the codec.
//!
//! Each node runs a small "filesystem" user: it takes PR and EX locks on a few OCFS2
//! inode lock names, holds them a while, caches them, writes a fresh LVB whenever it
//! leaves EX, and answers BASTs by downconverting once its work is done. The dead
//! node's recovery (journal replay) is done by whichever node the DLM names, after a
//! random delay.
//!
//! Invariants, checked at every step:
//! - never two EX holders of a resource, never EX together with PR (among running
//!   incarnations);
//! - no non-recovery grant conflicts with a lock a dead incarnation held before its
//!   recovery completed (recovery is per node slot, as OCFS2 replays a slot's
//!   journal: a recovery of node N begun after an incarnation of N stopped covers
//!   it);
//! - a grantee sees the latest LVB published under EX by any incarnation still
//!   running, and never an LVB nobody published;
//! - membership declares an incarnation dead only once it has crashed or fenced
//!   itself (so two sides never both keep the cluster and act on it);
//! - the state machines never panic.
//!
//! And at the end, after the faults stop and the cluster has been stable: every
//! running node is a member of every other's view, and every request was granted.
//!
//! The `split` runs partition a healthy cluster once, for good, and check o2quo's
//! outcome: the majority side keeps the cluster, an even split keeps the side with
//! the lowest node number, and the losing side fences itself.
//!
//! `SIM_SEED=N` replays one seed (of every scenario); `SIM_SEEDS=N` sets how many.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cluster::dlm::{self, ocfs2_lock_name, Dlm, LockName, LockType, Mode, LVB_LEN, RECOVERY};
use cluster::membership::{self, Input, Membership, MembershipConfig, Millis};
use cluster::message::{decode_dlm, decode_net, encode_dlm, encode_net};

const STEP: Millis = 100;

use simkit::Rng;

type Incarnation = (u8, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Nothing,
    Waiting(Mode, Millis),
}

#[derive(Debug, Clone)]
struct UserLock {
    granted: Option<Mode>,
    want: Want,
    busy_until: Millis,
    bast: Option<Mode>,
    recovery: bool,
}

struct SimNode {
    id: u8,
    generation: u64,
    running: bool,
    fenced: bool,
    restart_at: Option<Millis>,
    membership: Membership,
    dlm: Dlm,
    locks: BTreeMap<LockName, UserLock>,
    /// Recoveries this node was asked to do: (due time, incarnation, start).
    recoveries: Vec<(Millis, Incarnation, Millis)>,
}

struct Connection {
    /// Frames in flight, per direction (index 0: low → high node).
    queues: [VecDeque<(Millis, Vec<u8>)>; 2],
    silent: bool,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Millis,
    nodes: Vec<SimNode>,
    conns: BTreeMap<(u8, u8), Connection>,
    /// Node → partition side; nodes on different sides cannot talk.
    side: Vec<u8>,
    sectors: BTreeMap<u8, (u64, u64)>,
    next_generation: u64,
    names: Vec<LockName>,
    /// Ground truth: what each incarnation holds.
    holdings: BTreeMap<LockName, BTreeMap<Incarnation, Mode>>,
    /// Incarnations that stopped, with what they held, until recovered.
    dead_holdings: BTreeMap<Incarnation, BTreeMap<LockName, Mode>>,
    recovered: BTreeSet<Incarnation>,
    death_time: BTreeMap<Incarnation, Millis>,
    /// LVB tags published under EX, in order, with who wrote them.
    published: BTreeMap<LockName, Vec<(u64, Incarnation)>>,
    next_tag: u64,
    work: bool,
    faults: bool,
    /// (node, event) log for failures.
    trace: Vec<String>,
    fences: Vec<(u8, String)>,
    grants: u64,
    messages: u64,
}

fn config(node: u8, count: u8, generation: u64) -> MembershipConfig {
    MembershipConfig {
        cluster: "tclust".into(),
        local: node,
        nodes: (0..count).collect(),
        generation,
        idle_timeout_ms: 2000,
        keepalive_delay_ms: 500,
        reconnect_delay_ms: 500,
        heartbeat_threshold: 3,
        heartbeat_interval_ms: 1000,
    }
}

const DOMAIN: &str = "5F8C2A1B0D9E4C7A8B6F1E2D3C4B5A69";

fn lvb_with(tag: u64) -> [u8; LVB_LEN] {
    let mut lvb = [0u8; LVB_LEN];
    lvb[..8].copy_from_slice(&tag.to_be_bytes());
    lvb[8..16].copy_from_slice(&(!tag).to_be_bytes());
    lvb
}

fn tag_of(lvb: &[u8; LVB_LEN]) -> Result<u64, String> {
    let tag = u64::from_be_bytes(lvb[..8].try_into().unwrap());
    let check = u64::from_be_bytes(lvb[8..16].try_into().unwrap());
    if tag == 0 && check == 0 {
        return Ok(0);
    }
    if check != !tag {
        return Err(format!("corrupt LVB {lvb:?}"));
    }
    Ok(tag)
}

impl Sim {
    fn new(seed: u64, count: u8) -> Sim {
        let mut sim = Sim {
            seed,
            rng: Rng::new(seed),
            now: 0,
            nodes: Vec::new(),
            conns: BTreeMap::new(),
            side: vec![0; count as usize],
            sectors: BTreeMap::new(),
            next_generation: 1,
            names: (0..3)
                .map(|i| ocfs2_lock_name(LockType::Meta, 0x20a + i, 7))
                .collect(),
            holdings: BTreeMap::new(),
            dead_holdings: BTreeMap::new(),
            recovered: BTreeSet::new(),
            death_time: BTreeMap::new(),
            published: BTreeMap::new(),
            next_tag: 1,
            work: true,
            faults: true,
            trace: Vec::new(),
            fences: Vec::new(),
            grants: 0,
            messages: 0,
        };
        for id in 0..count {
            let node = sim.fresh_node(id, count);
            sim.nodes.push(node);
        }
        sim
    }

    fn fresh_node(&mut self, id: u8, count: u8) -> SimNode {
        let generation = self.next_generation * 1000 + u64::from(id);
        self.next_generation += 1;
        SimNode {
            id,
            generation,
            running: true,
            fenced: false,
            restart_at: None,
            membership: Membership::new(config(id, count, generation), self.now),
            dlm: Dlm::new(DOMAIN, id, generation),
            locks: BTreeMap::new(),
            recoveries: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(60).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        panic!("seed {}: t={} ms: {what}", self.seed, self.now);
    }

    fn log(&mut self, line: String) {
        if self.trace.len() > 4000 {
            self.trace.drain(..2000);
        }
        self.trace.push(format!("{:>7} {line}", self.now));
    }

    fn incarnation(&self, n: usize) -> Incarnation {
        (self.nodes[n].id, self.nodes[n].generation)
    }

    fn can_talk(&self, a: u8, b: u8) -> bool {
        self.nodes[a as usize].running
            && self.nodes[b as usize].running
            && self.side[a as usize] == self.side[b as usize]
    }

    // ---------------------------------------------------------------- membership

    fn feed(&mut self, n: usize, input: Input) {
        if !self.nodes[n].running {
            return;
        }
        let outputs = self.nodes[n].membership.handle(self.now, input);
        self.membership_outputs(n, outputs);
    }

    fn membership_outputs(&mut self, n: usize, outputs: Vec<membership::Output>) {
        let me = self.nodes[n].id;
        for output in outputs {
            if !self.nodes[n].running {
                return;
            }
            match output {
                membership::Output::Connect { peer } => {
                    // Answered at the next step, like a real connect.
                    if self.can_talk(me, peer) {
                        let key = (me.min(peer), me.max(peer));
                        self.conns.insert(
                            key,
                            Connection {
                                queues: [VecDeque::new(), VecDeque::new()],
                                silent: false,
                            },
                        );
                        self.log(format!("conn {me}-{peer} up"));
                        self.feed(peer as usize, Input::Connected { peer: me });
                        self.feed(n, Input::Connected { peer });
                    } else {
                        self.feed(n, Input::ConnectFailed { peer });
                    }
                }
                membership::Output::Close { peer } => {
                    let key = (me.min(peer), me.max(peer));
                    if let Some(conn) = self.conns.remove(&key) {
                        if !conn.silent {
                            self.feed(peer as usize, Input::Disconnected { peer: me });
                        }
                    }
                }
                membership::Output::Send { peer, message } => {
                    let mut bytes = Vec::new();
                    encode_net(&message, &mut bytes);
                    let key = (me.min(peer), me.max(peer));
                    let dir = usize::from(me > peer);
                    let delay = 1 + self.rng.below(300);
                    let talk = self.can_talk(me, peer);
                    if let Some(conn) = self.conns.get_mut(&key) {
                        if !talk {
                            conn.silent = true;
                        }
                        if !conn.silent {
                            let at = conn.queues[dir]
                                .back()
                                .map_or(0, |(t, _)| *t)
                                .max(self.now + delay);
                            conn.queues[dir].push_back((at, bytes));
                        }
                    }
                }
                membership::Output::WriteHeartbeat { sequence } => {
                    // Read the region, then write our sector.
                    let generation = self.nodes[n].generation;
                    let sectors: Vec<(u8, (u64, u64))> =
                        self.sectors.iter().map(|(&k, &v)| (k, v)).collect();
                    self.sectors.insert(me, (generation, sequence));
                    for (peer, (generation, sequence)) in sectors {
                        {
                            self.feed(
                                n,
                                Input::DiskHeartbeat {
                                    peer,
                                    generation,
                                    sequence,
                                },
                            );
                        }
                    }
                }
                membership::Output::Heartbeating { nodes } => {
                    let out = self.nodes[n].dlm.heartbeating(nodes);
                    self.dlm_outputs(n, out);
                }
                membership::Output::Refused { peer, error } => {
                    self.fail(format!("node {me} refused {peer}: {error}"))
                }
                membership::Output::Joined { node, generation } => {
                    self.log(format!("node {me} sees {node}/{generation} join"));
                    let out = self.nodes[n].dlm.node_up(node, generation);
                    self.dlm_outputs(n, out);
                }
                membership::Output::Dead { node, generation } => {
                    self.log(format!("node {me} sees {node}/{generation} dead"));
                    let target = &self.nodes[node as usize];
                    if target.generation == generation && target.running {
                        self.fail(format!(
                            "node {me} declared node {node}/{generation} dead while it runs"
                        ));
                    }
                    let out = self.nodes[n].dlm.node_down(node, generation);
                    self.dlm_outputs(n, out);
                }
                membership::Output::Deliver {
                    node,
                    generation,
                    payload,
                } => {
                    let message = decode_dlm(&payload)
                        .unwrap_or_else(|e| self.fail(format!("undecodable DLM message: {e}")));
                    self.messages += 1;
                    self.log(format!("node {me} <- {node}: {}", short(&message)));
                    let out = self.nodes[n].dlm.receive(node, generation, message);
                    self.dlm_outputs(n, out);
                }
                membership::Output::Fence { reason } => {
                    self.log(format!("node {me} FENCES: {reason}"));
                    self.fences.push((me, reason.to_string()));
                    self.stop(n, true);
                    let delay = 5_000 + self.rng.below(10_000);
                    self.nodes[n].restart_at = Some(self.now + delay);
                }
            }
        }
    }

    // ---------------------------------------------------------------- DLM

    fn dlm_outputs(&mut self, n: usize, outputs: Vec<dlm::Output>) {
        let me = self.nodes[n].id;
        for output in outputs {
            if !self.nodes[n].running {
                return;
            }
            match output {
                dlm::Output::Send {
                    to,
                    generation,
                    message,
                } => {
                    let payload = encode_dlm(&message);
                    let out = self.nodes[n]
                        .membership
                        .send(self.now, to, generation, payload);
                    self.membership_outputs(n, out);
                }
                dlm::Output::Granted {
                    name,
                    mode,
                    lvb,
                    lvb_version: _,
                } => self.granted(n, name, mode, lvb),
                dlm::Output::Blocking { name, wanted } => {
                    self.log(format!("node {me} BAST {name} wants {wanted}"));
                    if let Some(lock) = self.nodes[n].locks.get_mut(&name) {
                        lock.bast = Some(lock.bast.map_or(wanted, |b| b.max(wanted)));
                    }
                }
                dlm::Output::Recover { node, generation } => {
                    self.log(format!("node {me} recovers {node}/{generation}"));
                    let due = self.now + 200 + self.rng.below(2000);
                    self.nodes[n]
                        .recoveries
                        .push((due, (node, generation), self.now));
                }
            }
        }
    }

    fn granted(&mut self, n: usize, name: LockName, mode: Mode, lvb: [u8; LVB_LEN]) {
        let me = self.incarnation(n);
        self.log(format!("node {} GRANTED {name} {mode}", me.0));
        self.grants += 1;
        let Some(lock) = self.nodes[n].locks.get_mut(&name) else {
            self.fail(format!("grant of {name} nobody asked for"));
        };
        let recovery = lock.recovery;
        match lock.want {
            Want::Waiting(w, _) if w == mode => {}
            Want::Waiting(w, _) => self.fail(format!("asked {w}, granted {mode}")),
            Want::Nothing => self.fail(format!("unexpected grant of {name} {mode}")),
        }
        lock.want = Want::Nothing;
        lock.granted = Some(mode);
        lock.busy_until = self.now + self.rng.below(600);
        // Exclusion among running incarnations.
        let holders = self.holdings.entry(name.clone()).or_default();
        holders.insert(me, mode);
        let holders = holders.clone();
        for (&other, &m) in &holders {
            if other != me && !m.compatible(mode) {
                self.fail(format!(
                    "{name}: node {} granted {mode} while node {} holds {m}",
                    me.0, other.0
                ));
            }
        }
        // Dead incarnations keep their locks until recovered.
        if !recovery {
            for (dead, held) in &self.dead_holdings {
                if self.recovered.contains(dead) {
                    continue;
                }
                if let Some(&m) = held.get(&name) {
                    if !m.compatible(mode) {
                        self.fail(format!(
                            "{name}: node {} granted {mode} before dead {:?} (held {m}) was recovered",
                            me.0, dead
                        ));
                    }
                }
            }
        }
        // The LVB.
        if mode != Mode::Nl && !recovery {
            let tag = tag_of(&lvb).unwrap_or_else(|e| self.fail(e));
            let published = self.published.get(&name).cloned().unwrap_or_default();
            let position = if tag == 0 {
                None
            } else {
                match published.iter().position(|(t, _)| *t == tag) {
                    Some(p) => Some(p),
                    None => self.fail(format!("{name}: LVB tag {tag} was never published")),
                }
            };
            let latest_live = published.iter().rposition(|(_, who)| {
                let node = &self.nodes[who.0 as usize];
                node.running && node.generation == who.1
            });
            if latest_live > position {
                self.fail(format!(
                    "{name}: node {} got LVB #{position:?} but #{latest_live:?} by a live node is newer",
                    me.0
                ));
            }
        }
    }

    /// The user lowers its lock on `name` to `mode` (None: unlock).
    fn release(&mut self, n: usize, name: &LockName, mode: Option<Mode>) {
        let me = self.incarnation(n);
        let lock = self.nodes[n].locks.get(name).expect("known").clone();
        let from = lock.granted.expect("held");
        let lvb = if from == Mode::Ex {
            let tag = self.next_tag;
            self.next_tag += 1;
            self.published
                .entry(name.clone())
                .or_default()
                .push((tag, me));
            Some(lvb_with(tag))
        } else {
            None
        };
        self.log(format!("node {} release {name} {from} -> {mode:?}", me.0));
        let result = match mode {
            Some(m) => self.nodes[n].dlm.downconvert(name, m, lvb),
            None => self.nodes[n].dlm.unlock(name, lvb),
        };
        let out = result.unwrap_or_else(|e| self.fail(format!("release refused: {e}")));
        let lock = self.nodes[n].locks.get_mut(name).expect("known");
        lock.granted = mode;
        lock.bast = None;
        let holders = self.holdings.entry(name.clone()).or_default();
        match mode {
            Some(m) => holders.insert(me, m),
            None => holders.remove(&me),
        };
        self.dlm_outputs(n, out);
    }

    fn request(&mut self, n: usize, name: &LockName, mode: Mode, flags: u8) {
        let now = self.now;
        let lock = self.nodes[n].locks.entry(name.clone()).or_insert(UserLock {
            granted: None,
            want: Want::Nothing,
            busy_until: 0,
            bast: None,
            recovery: false,
        });
        lock.want = Want::Waiting(mode, now);
        lock.recovery = flags & RECOVERY != 0;
        self.log(format!("node {} asks {name} {mode}", self.nodes[n].id));
        let out = self.nodes[n]
            .dlm
            .lock(name, mode, flags)
            .unwrap_or_else(|e| self.fail(format!("lock refused: {e}")));
        self.dlm_outputs(n, out);
    }

    fn user_step(&mut self, n: usize) {
        let now = self.now;
        // Answer BASTs once the work is done.
        let names: Vec<LockName> = self.nodes[n].locks.keys().cloned().collect();
        for name in &names {
            let lock = self.nodes[n].locks[name].clone();
            if let (Some(granted), Some(wanted)) = (lock.granted, lock.bast) {
                if lock.busy_until <= now {
                    let target = Mode::highest_compatible(wanted);
                    if target < granted {
                        let mode = if target == Mode::Nl
                            && self.rng.chance(300)
                            && lock.want == Want::Nothing
                        {
                            None
                        } else {
                            Some(target)
                        };
                        self.release(n, name, mode);
                    } else {
                        self.nodes[n].locks.get_mut(name).expect("known").bast = None;
                    }
                }
            }
        }
        if !self.work || !self.rng.chance(150) {
            return;
        }
        let name = self.names[self.rng.below(self.names.len() as u64) as usize].clone();
        let lock = self.nodes[n].locks.get(&name).cloned();
        match lock {
            Some(UserLock {
                want: Want::Waiting(..),
                ..
            }) => {}
            Some(UserLock {
                granted: Some(g),
                busy_until,
                ..
            }) if busy_until <= now => {
                // Done with it: drop, downconvert, or upconvert.
                match self.rng.below(4) {
                    0 => self.release(n, &name, None),
                    1 if g > Mode::Nl => self.release(n, &name, Some(Mode::Nl)),
                    2 if g < Mode::Ex => self.request(n, &name, Mode::Ex, 0),
                    _ => {
                        // Use the cached lock again (a local re-acquire).
                        self.nodes[n]
                            .locks
                            .get_mut(&name)
                            .expect("known")
                            .busy_until = now + self.rng.below(400);
                    }
                }
            }
            Some(UserLock {
                granted: Some(_), ..
            }) => {}
            _ => {
                let mode = if self.rng.chance(500) {
                    Mode::Ex
                } else {
                    Mode::Pr
                };
                self.request(n, &name, mode, 0);
            }
        }
    }

    // ---------------------------------------------------------------- faults

    /// The node stops: crash, or fence (stop cluster services and fail I/O).
    fn stop(&mut self, n: usize, fenced: bool) {
        let me = self.incarnation(n);
        self.nodes[n].running = false;
        self.nodes[n].fenced = fenced;
        let mut held = BTreeMap::new();
        for (name, holders) in self.holdings.iter_mut() {
            if let Some(m) = holders.remove(&me) {
                held.insert(name.clone(), m);
            }
        }
        self.dead_holdings.insert(me, held);
        self.death_time.insert(me, self.now);
        let keys: Vec<(u8, u8)> = self
            .conns
            .keys()
            .filter(|(a, b)| *a == me.0 || *b == me.0)
            .copied()
            .collect();
        let reset = self.rng.chance(500);
        for key in keys {
            self.conns.remove(&key);
            let other = if key.0 == me.0 { key.1 } else { key.0 };
            if reset {
                self.feed(other as usize, Input::Disconnected { peer: me.0 });
            }
        }
    }

    fn restart(&mut self, n: usize) {
        let count = self.nodes.len() as u8;
        let id = self.nodes[n].id;
        self.nodes[n] = self.fresh_node(id, count);
        self.log(format!(
            "node {id} restarts as {}",
            self.nodes[n].generation
        ));
    }

    fn faults_step(&mut self) {
        let count = self.nodes.len() as u64;
        if self.rng.chance(4) && !self.conns.is_empty() {
            let keys: Vec<(u8, u8)> = self.conns.keys().copied().collect();
            let key = keys[self.rng.below(keys.len() as u64) as usize];
            self.conns.remove(&key);
            self.log(format!("conn {}-{} breaks", key.0, key.1));
            self.feed(key.0 as usize, Input::Disconnected { peer: key.1 });
            self.feed(key.1 as usize, Input::Disconnected { peer: key.0 });
        }
        if self.rng.chance(2) {
            if self.side.iter().all(|&s| s == 0) {
                for s in self.side.iter_mut() {
                    *s = 0;
                }
                for i in 0..count as usize {
                    self.side[i] = self.rng.below(2) as u8;
                }
                self.log(format!("partition {:?}", self.side));
            } else {
                self.side.iter_mut().for_each(|s| *s = 0);
                self.log("partition heals".into());
            }
        }
        if self.rng.chance(2) {
            let n = self.rng.below(count) as usize;
            if self.nodes[n].running {
                self.log(format!("node {n} crashes"));
                self.stop(n, false);
                let delay = 500 + self.rng.below(8000);
                self.nodes[n].restart_at = Some(self.now + delay);
            }
        }
    }

    // ---------------------------------------------------------------- the loop

    fn step(&mut self) {
        self.now += STEP;
        // Frames due, connection by connection in random order.
        let mut keys: Vec<(u8, u8)> = self.conns.keys().copied().collect();
        for i in (1..keys.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            keys.swap(i, j);
        }
        for key in keys {
            for dir in 0..2 {
                while let Some(conn) = self.conns.get_mut(&key) {
                    if conn.silent {
                        conn.queues[dir].clear();
                        break;
                    }
                    match conn.queues[dir].front() {
                        Some((t, _)) if *t <= self.now => {}
                        _ => break,
                    }
                    let (_, bytes) = conn.queues[dir].pop_front().expect("front");
                    let (from, to) = if dir == 0 { key } else { (key.1, key.0) };
                    let (message, used) = decode_net(&bytes)
                        .unwrap_or_else(|e| self.fail(format!("undecodable frame: {e}")));
                    assert_eq!(used, bytes.len());
                    self.feed(
                        to as usize,
                        Input::Received {
                            peer: from,
                            message,
                        },
                    );
                }
            }
        }
        for n in 0..self.nodes.len() {
            if !self.nodes[n].running {
                if self.nodes[n].restart_at.is_some_and(|t| t <= self.now) {
                    self.restart(n);
                }
                continue;
            }
            self.feed(n, Input::Tick);
            let due: Vec<(Millis, Incarnation, Millis)> = self.nodes[n]
                .recoveries
                .iter()
                .filter(|(t, _, _)| *t <= self.now)
                .copied()
                .collect();
            self.nodes[n].recoveries.retain(|(t, _, _)| *t > self.now);
            for (_, (node, generation), started) in due {
                if self.nodes[n].running {
                    self.log(format!("node {n} recovery of {node}/{generation} done"));
                    // OCFS2 recovers a node *slot* (its journal): every incarnation
                    // of that node that had stopped when the replay began is covered.
                    let covered: Vec<Incarnation> = self
                        .death_time
                        .iter()
                        .filter(|(d, &t)| d.0 == node && t <= started)
                        .map(|(&d, _)| d)
                        .collect();
                    self.recovered.extend(covered);
                    self.recovered.insert((node, generation));
                    let out = self.nodes[n].dlm.recovery_done(node, generation);
                    self.dlm_outputs(n, out);
                }
            }
            if self.nodes[n].running {
                self.user_step(n);
            }
        }
        if self.faults {
            self.faults_step();
        }
    }

    fn run_for(&mut self, duration: Millis) {
        let end = self.now + duration;
        while self.now < end {
            self.step();
        }
    }

    /// Faults stop, partitions heal, stopped nodes come back; then the cluster must
    /// settle and serve every request.
    fn settle(&mut self) {
        self.faults = false;
        self.side.iter_mut().for_each(|s| *s = 0);
        for n in 0..self.nodes.len() {
            if !self.nodes[n].running {
                self.nodes[n].restart_at = Some(self.now + 500);
            }
        }
        self.run_for(20_000);
        self.work = false;
        self.run_for(15_000);
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            if !node.running {
                self.fail(format!("node {n} did not come back"));
            }
            let members: BTreeSet<u8> = node.dlm.members().keys().copied().collect();
            let all: BTreeSet<u8> = (0..self.nodes.len() as u8).collect();
            if members != all || !node.dlm.ready() || !node.dlm.pending_recovery().is_empty() {
                self.fail(format!(
                    "node {n}: view {members:?} (ready {}) after the cluster was stable",
                    node.dlm.ready()
                ));
            }
            for (name, lock) in &node.locks {
                if let Want::Waiting(mode, since) = lock.want {
                    self.fail(format!(
                        "node {n}: request {name} {mode} from t={since} never answered"
                    ));
                }
            }
        }
    }
}

fn short(message: &cluster::message::DlmMessage) -> String {
    use cluster::message::DlmMessage::*;
    match message {
        SyncRequest { view, nonce, .. } => format!("SyncRequest v{view:x} #{nonce}"),
        SyncReply {
            view, nonce, locks, ..
        } => format!("SyncReply v{view:x} #{nonce} {} locks", locks.len()),
        Request {
            name, mode, seq, ..
        } => format!("Request {name} {mode} #{seq}"),
        Grant {
            name, mode, seq, ..
        } => format!("Grant {name} {mode} #{seq}"),
        Bast { name, mode, .. } => format!("Bast {name} {mode}"),
        Downconvert { name, mode, .. } => format!("Downconvert {name} {mode:?}"),
        RecoveryDone {
            node, generation, ..
        } => format!("RecoveryDone {node}/{generation}"),
    }
}

fn chaos(seed: u64) -> Sim {
    let mut rng = Rng::new(seed ^ 0x5555);
    let count = 2 + rng.below(4) as u8;
    let mut sim = Sim::new(seed, count);
    sim.run_for(40_000);
    sim.settle();
    sim
}

/// A healthy cluster split once for good: o2quo's outcome, then recovery.
fn split(seed: u64) -> Sim {
    let mut rng = Rng::new(seed ^ 0xAAAA);
    let count = 2 + rng.below(4) as u8;
    let mut sim = Sim::new(seed, count);
    sim.faults = false;
    sim.run_for(8_000);
    let mut side: Vec<u8> = (0..count).map(|_| rng.below(2) as u8).collect();
    if side.iter().all(|&s| s == side[0]) {
        side[rng.below(u64::from(count)) as usize] ^= 1;
    }
    sim.side = side.clone();
    sim.log(format!("split {side:?}"));
    sim.run_for(30_000);
    let in_side = |s: u8| side.iter().filter(|&&x| x == s).count();
    let winner = if in_side(0) * 2 > count as usize {
        0
    } else if in_side(1) * 2 > count as usize {
        1
    } else {
        side[0] // even split: node 0's side
    };
    for n in 0..count as usize {
        let fenced = sim.fences.iter().any(|(id, _)| usize::from(*id) == n);
        if fenced == (side[n] == winner) {
            sim.fail(format!(
                "split {side:?}: node {n} fenced={fenced}, but side {winner} should keep the cluster"
            ));
        }
    }
    sim.settle();
    sim
}

fn seeds() -> Vec<u64> {
    match simkit::replay_seed() {
        Some(seed) => vec![seed],
        None => (1..=simkit::seed_count(40, 2500)).collect(),
    }
}

#[test]
fn chaos_runs() {
    let mut grants = 0;
    let mut fences = 0;
    for seed in seeds() {
        let sim = chaos(seed);
        grants += sim.grants;
        fences += sim.fences.len();
    }
    assert!(grants > 0);
    eprintln!("chaos: {grants} grants, {fences} fences");
}

#[test]
fn split_runs() {
    for seed in seeds() {
        split(seed);
    }
}

/// Messages per contended EX handoff between two nodes: node 0 holds EX (cached),
/// node 1 asks for EX; counted from node 1's request to its grant.
#[test]
fn ex_handoff_message_count() {
    let mut counts = Vec::new();
    for seed in 1..=20u64 {
        let mut sim = Sim::new(seed, 2);
        sim.faults = false;
        sim.work = false;
        sim.run_for(8_000);
        assert_eq!(sim.nodes[0].dlm.members().len(), 2);
        let name = sim.names[(seed % 3) as usize].clone();
        sim.request(0, &name, Mode::Ex, 0);
        sim.run_for(2_000);
        assert_eq!(sim.nodes[0].locks[&name].granted, Some(Mode::Ex));
        sim.nodes[0].locks.get_mut(&name).unwrap().busy_until = 0;
        let before = sim.messages;
        sim.request(1, &name, Mode::Ex, 0);
        let mut steps = 0;
        while sim.nodes[1].locks[&name].granted != Some(Mode::Ex) {
            sim.step();
            steps += 1;
            assert!(steps < 100, "handoff never completed");
        }
        counts.push(sim.messages - before);
    }
    let max = *counts.iter().max().unwrap();
    eprintln!("messages per contended EX handoff: {counts:?}");
    assert!(max <= 3, "a handoff took {max} messages");
}
