//! Membership: which nodes are alive, from network and disk heartbeat, the quorum
//! decision, and self-fencing. A sans-IO state machine per node.
//!
//! The host feeds [`Input`]s (connections made and lost, frames received, disk
//! heartbeat observations, timer ticks) with a monotonic time in milliseconds it
//! reads itself, and carries out the [`Output`]s (frames to send, connections to
//! open or close, heartbeat sectors to write, events). There is no clock, socket or
//! thread here.
//!
//! The rules are o2cb's:
//! - **Network.** The higher-numbered node of a pair connects to the lower one,
//!   retrying every reconnect delay. Each side sends a [`Hello`] first; a peer not in
//!   cluster.conf, of another cluster, or whose idle timeout, keepalive delay or
//!   reconnect delay differ from ours is refused ([`HandshakeError`]). A side that
//!   has sent nothing for the keepalive delay sends a keepalive; a connection that
//!   received nothing for the idle timeout is closed.
//! - **Disk.** Every 2 s the node writes its heartbeat sector (a growing sequence
//!   number and its generation); the host reads the region and reports each peer's
//!   sector. A peer is heartbeating while its sector changed within the dead time
//!   ((threshold − 1) × 2 s).
//! - **Joined / dead.** A peer joins when its handshake is done and it heartbeats on
//!   disk. It is dead when its disk heartbeat stopped for the dead time *and* no
//!   connection to it is up, or at once when it shows up with a new generation (it
//!   restarted, so its old incarnation is gone).
//! - **Quorum.** When the connection to a peer that still heartbeats is lost, the
//!   decision waits (threshold + 2) × 2 s for it to come back or stop heartbeating.
//!   If neither happened, the node decides as o2quo does: with an odd number of
//!   heartbeating nodes it needs to be connected to a majority of them; with an
//!   even number, to half of them if that half holds the lowest-numbered
//!   heartbeating node, else to more than half. Otherwise it fences itself.
//! - **Fencing.** [`Output::Fence`] says why; from then on the machine stops: no
//!   heartbeat writes, no frames, no events. The host stops all I/O to shared
//!   volumes and abandons the node's locks (the kernel would panic; we stop the
//!   node's cluster services instead).
//!
//! The connection also carries the upper layer's messages ([`Membership::send`]) as
//! a reliable channel per peer incarnation: numbered, acknowledged, resent after a
//! reconnect, delivered once and in order ([`Output::Deliver`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::message::{Hello, NetMessage, PROTOCOL_VERSION};
use crate::settings::{O2cbSettings, HEARTBEAT_INTERVAL};

/// Milliseconds on the host's monotonic clock.
pub type Millis = u64;

/// What this node runs with; every peer must agree on the network timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    pub cluster: String,
    pub local: u8,
    /// Every node number in cluster.conf for this cluster (the local one too).
    pub nodes: BTreeSet<u8>,
    /// This start's incarnation number; never 0, different at every start.
    pub generation: u64,
    pub idle_timeout_ms: u32,
    pub keepalive_delay_ms: u32,
    pub reconnect_delay_ms: u32,
    /// O2CB_HEARTBEAT_THRESHOLD, in beats.
    pub heartbeat_threshold: u32,
    /// The disk heartbeat period (2 s in o2cb; tests may shorten it).
    pub heartbeat_interval_ms: u32,
}

impl MembershipConfig {
    /// The configuration from cluster.conf's node numbers and /etc/default/o2cb.
    pub fn new(
        cluster: &str,
        local: u8,
        nodes: BTreeSet<u8>,
        generation: u64,
        settings: &O2cbSettings,
    ) -> MembershipConfig {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        MembershipConfig {
            cluster: cluster.to_string(),
            local,
            nodes,
            generation,
            idle_timeout_ms: ms(settings.idle_timeout),
            keepalive_delay_ms: ms(settings.keepalive_delay),
            reconnect_delay_ms: ms(settings.reconnect_delay),
            heartbeat_threshold: settings.heartbeat_threshold,
            heartbeat_interval_ms: ms(HEARTBEAT_INTERVAL),
        }
    }

    /// A peer whose sector did not change for this long is not heartbeating.
    pub fn dead_time_ms(&self) -> Millis {
        Millis::from(self.heartbeat_interval_ms)
            * Millis::from(self.heartbeat_threshold.saturating_sub(1))
    }

    /// How long a lost connection to a heartbeating peer waits before the quorum
    /// decision (o2net's quorum delay).
    pub fn quorum_delay_ms(&self) -> Millis {
        Millis::from(self.heartbeat_interval_ms) * Millis::from(self.heartbeat_threshold + 2)
    }
}

/// Something the host tells the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed.
    Tick,
    /// A connection to `peer` is established (outgoing, or incoming from the
    /// address cluster.conf gives `peer`). A previous one is replaced.
    Connected { peer: u8 },
    /// An outgoing connection attempt failed.
    ConnectFailed { peer: u8 },
    /// The connection to `peer` is closed or broken.
    Disconnected { peer: u8 },
    /// A frame arrived on the connection to `peer`.
    Received { peer: u8, message: NetMessage },
    /// The host read `peer`'s heartbeat sector (our own too: before our first
    /// write it tells whether a previous incarnation of ours stopped uncleanly).
    DiskHeartbeat {
        peer: u8,
        generation: u64,
        sequence: u64,
    },
    /// The node's own heartbeat write did not complete in time (o2hb's disk timeout).
    DiskTimeout,
}

/// Something the host must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Connect {
        peer: u8,
    },
    Close {
        peer: u8,
    },
    Send {
        peer: u8,
        message: NetMessage,
    },
    /// Write our sector: this sequence number and our generation.
    WriteHeartbeat {
        sequence: u64,
    },
    /// A peer was refused at the handshake (log it; the daemon goes on).
    Refused {
        peer: u8,
        error: HandshakeError,
    },
    Joined {
        node: u8,
        generation: u64,
    },
    /// A member died; also, once at start, every incarnation whose sector is stale
    /// (it stopped without clearing it), our own previous one included.
    Dead {
        node: u8,
        generation: u64,
    },
    /// An upper-layer message from `node` (incarnation `generation`).
    Deliver {
        node: u8,
        generation: u64,
        payload: Vec<u8>,
    },
    /// The peers heartbeating on disk, once the first reads of the region are done
    /// (the dead time after start) and whenever the set changes after that. The DLM
    /// grants nothing until every one of them is in its view.
    Heartbeating {
        nodes: BTreeSet<u8>,
    },
    /// Stop all I/O to shared volumes, abandon locks, report `reason`. Final.
    Fence {
        reason: FenceReason,
    },
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("node {node} is not in cluster.conf")]
    UnknownNode { node: u8 },
    #[error("node {claimed} connected from the address of node {peer}")]
    WrongNode { peer: u8, claimed: u8 },
    #[error("peer is in cluster '{theirs}', we are in '{ours}'")]
    WrongCluster { ours: String, theirs: String },
    #[error("peer speaks protocol {theirs}, we speak {ours}")]
    Version { ours: u8, theirs: u8 },
    #[error("peer's {which} is {theirs} ms, ours is {ours} ms")]
    TimeoutMismatch {
        which: &'static str,
        ours: u32,
        theirs: u32,
    },
}

/// Why the node fenced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceReason {
    /// The quorum rule says the other side keeps the cluster.
    QuorumLost {
        heartbeating: usize,
        connected: usize,
        needed: usize,
        lowest: u8,
    },
    /// Our own heartbeat writes stopped reaching the disk.
    DiskTimeout,
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceReason::QuorumLost {
                heartbeating,
                connected,
                needed,
                lowest,
            } => write!(
                f,
                "fencing this node: connected to {connected} of {heartbeating} heartbeating \
                 nodes, {needed} needed (lowest node {lowest} decides an even split)"
            ),
            FenceReason::DiskTimeout => {
                write!(f, "fencing this node: its disk heartbeat writes timed out")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    None { retry_at: Millis },
    Connecting,
    Handshaking { since: Millis, last_tx: Millis },
    Up { last_rx: Millis, last_tx: Millis },
}

#[derive(Debug, Clone, Default)]
struct Disk {
    /// Whether we have read the sector at all.
    read: bool,
    generation: u64,
    sequence: u64,
    /// Whether it changed since our first read (the node is alive).
    changed: bool,
    /// Consecutive reads that found it unchanged (o2hb's equal samples).
    equal_samples: u32,
    /// Its death was reported though it never joined.
    reported_dead: bool,
}

#[derive(Debug, Clone)]
struct Peer {
    conn: Conn,
    disk: Disk,
    /// The generation it announced in its last Hello.
    hello_generation: u64,
    /// The incarnation we consider a member.
    member: Option<u64>,
    /// Quorum decision due at this time (a lost connection to a heartbeating peer).
    hold_until: Option<Millis>,
    channel: Channel,
}

/// The reliable channel to one peer incarnation.
#[derive(Debug, Clone, Default)]
struct Channel {
    /// The peer incarnation this channel talks to (0: none yet).
    generation: u64,
    next_seq: u64,
    unacked: VecDeque<(u64, Vec<u8>)>,
    received: u64,
    /// Received before we counted the peer as joined: delivered at the join.
    early: Vec<Vec<u8>>,
}

impl Channel {
    fn reset(&mut self, generation: u64) {
        *self = Channel {
            generation,
            next_seq: 1,
            ..Channel::default()
        };
    }
    fn ack(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|(s, _)| *s <= ack) {
            self.unacked.pop_front();
        }
    }
}

/// The membership state machine of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    config: MembershipConfig,
    now: Millis,
    peers: BTreeMap<u8, Peer>,
    next_beat: Millis,
    sequence: u64,
    /// When the first reads of the region are done.
    steady_at: Millis,
    reported: Option<BTreeSet<u8>>,
    /// Our own sector's generation at our first read (a previous incarnation).
    own_previous: Option<u64>,
    fenced: Option<FenceReason>,
    out: Vec<Output>,
}

impl Membership {
    pub fn new(config: MembershipConfig, now: Millis) -> Membership {
        // Enough reads of the region to see every live node change and every
        // stale sector stay still for the threshold.
        let steady_at = now
            + Millis::from(config.heartbeat_interval_ms)
                * Millis::from(config.heartbeat_threshold + 2);
        let peers = config
            .nodes
            .iter()
            .filter(|&&n| n != config.local)
            .map(|&n| {
                (
                    n,
                    Peer {
                        conn: Conn::None { retry_at: now },
                        disk: Disk::default(),
                        hello_generation: 0,
                        member: None,
                        hold_until: None,
                        channel: Channel::default(),
                    },
                )
            })
            .collect();
        Membership {
            config,
            now,
            peers,
            next_beat: now,
            sequence: 0,
            steady_at,
            reported: None,
            own_previous: None,
            fenced: None,
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Why the node fenced itself, once it has.
    pub fn fenced(&self) -> Option<&FenceReason> {
        self.fenced.as_ref()
    }

    /// The live members (other nodes, with their generations).
    pub fn members(&self) -> BTreeMap<u8, u64> {
        self.peers
            .iter()
            .filter_map(|(&n, p)| p.member.map(|g| (n, g)))
            .collect()
    }

    /// Peers with a connection that finished its handshake.
    pub fn connected(&self) -> BTreeSet<u8> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(p.conn, Conn::Up { .. }))
            .map(|(&n, _)| n)
            .collect()
    }

    /// Queues an upper-layer message for `node`'s incarnation `generation`. It is
    /// sent now if connected, else after the next handshake; dropped if that
    /// incarnation is not (or no longer) a member.
    pub fn send(
        &mut self,
        now: Millis,
        node: u8,
        generation: u64,
        payload: Vec<u8>,
    ) -> Vec<Output> {
        self.now = self.now.max(now);
        if self.fenced.is_none() {
            if let Some(peer) = self.peers.get_mut(&node) {
                if peer.member == Some(generation) && peer.channel.generation == generation {
                    let seq = peer.channel.next_seq;
                    peer.channel.next_seq += 1;
                    peer.channel.unacked.push_back((seq, payload.clone()));
                    if let Conn::Up { last_tx, .. } = &mut peer.conn {
                        *last_tx = self.now;
                        let ack = peer.channel.received;
                        self.out.push(Output::Send {
                            peer: node,
                            message: NetMessage::Data { seq, ack, payload },
                        });
                    }
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Feeds one input at time `now` (monotonic; earlier values are taken as the
    /// latest seen).
    pub fn handle(&mut self, now: Millis, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        if self.fenced.is_some() {
            return Vec::new();
        }
        match input {
            Input::Tick => {}
            Input::Connected { peer } => self.on_connected(peer),
            Input::ConnectFailed { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.conn == Conn::Connecting {
                        p.conn = Conn::None {
                            retry_at: self.now + Millis::from(self.config.reconnect_delay_ms),
                        };
                    }
                }
            }
            Input::Disconnected { peer } => self.connection_lost(peer, false),
            Input::Received { peer, message } => self.on_message(peer, message),
            Input::DiskHeartbeat {
                peer,
                generation,
                sequence,
            } => self.on_disk(peer, generation, sequence),
            Input::DiskTimeout => self.fence(FenceReason::DiskTimeout),
        }
        if self.fenced.is_none() {
            self.on_time();
        }
        std::mem::take(&mut self.out)
    }

    fn hello(&self, peer: u8) -> NetMessage {
        let p = &self.peers[&peer];
        NetMessage::Hello(Hello {
            version: PROTOCOL_VERSION,
            node: self.config.local,
            cluster: self.config.cluster.clone(),
            idle_timeout_ms: self.config.idle_timeout_ms,
            keepalive_delay_ms: self.config.keepalive_delay_ms,
            reconnect_delay_ms: self.config.reconnect_delay_ms,
            generation: self.config.generation,
            acked_generation: p.channel.generation,
            acked: p.channel.received,
        })
    }

    fn on_connected(&mut self, peer: u8) {
        if !self.peers.contains_key(&peer) {
            self.out.push(Output::Refused {
                peer,
                error: HandshakeError::UnknownNode { node: peer },
            });
            self.out.push(Output::Close { peer });
            return;
        }
        if matches!(self.peers[&peer].conn, Conn::Up { .. }) {
            self.connection_lost(peer, false);
        }
        let hello = self.hello(peer);
        let now = self.now;
        let p = self.peers.get_mut(&peer).expect("known peer");
        p.conn = Conn::Handshaking {
            since: now,
            last_tx: now,
        };
        self.out.push(Output::Send {
            peer,
            message: hello,
        });
    }

    fn check_hello(&self, peer: u8, h: &Hello) -> Result<(), HandshakeError> {
        let c = &self.config;
        if h.version != PROTOCOL_VERSION {
            return Err(HandshakeError::Version {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            });
        }
        if !c.nodes.contains(&h.node) || h.node == c.local {
            return Err(HandshakeError::UnknownNode { node: h.node });
        }
        if h.node != peer {
            return Err(HandshakeError::WrongNode {
                peer,
                claimed: h.node,
            });
        }
        if h.cluster != c.cluster {
            return Err(HandshakeError::WrongCluster {
                ours: c.cluster.clone(),
                theirs: h.cluster.clone(),
            });
        }
        for (which, ours, theirs) in [
            ("idle timeout", c.idle_timeout_ms, h.idle_timeout_ms),
            (
                "keepalive delay",
                c.keepalive_delay_ms,
                h.keepalive_delay_ms,
            ),
            (
                "reconnect delay",
                c.reconnect_delay_ms,
                h.reconnect_delay_ms,
            ),
        ] {
            if ours != theirs {
                return Err(HandshakeError::TimeoutMismatch {
                    which,
                    ours,
                    theirs,
                });
            }
        }
        Ok(())
    }

    fn on_message(&mut self, peer: u8, message: NetMessage) {
        let Some(p) = self.peers.get(&peer) else {
            self.out.push(Output::Close { peer });
            return;
        };
        let now = self.now;
        match (p.conn, message) {
            (Conn::Handshaking { .. }, NetMessage::Hello(h)) => {
                if let Err(error) = self.check_hello(peer, &h) {
                    self.out.push(Output::Refused { peer, error });
                    self.out.push(Output::Close { peer });
                    self.connection_lost(peer, true);
                    return;
                }
                if h.generation == 0 {
                    self.out.push(Output::Close { peer });
                    self.connection_lost(peer, true);
                    return;
                }
                // A new incarnation: the old one is gone, whatever the disk says.
                self.incarnation_seen(peer, h.generation);
                let local_generation = self.config.generation;
                let p = self.peers.get_mut(&peer).expect("known peer");
                p.hello_generation = h.generation;
                if p.channel.generation != h.generation {
                    p.channel.reset(h.generation);
                } else if h.acked_generation == local_generation {
                    p.channel.ack(h.acked);
                }
                p.conn = Conn::Up {
                    last_rx: now,
                    last_tx: now,
                };
                p.hold_until = None;
                let ack = p.channel.received;
                let resend: Vec<_> = p.channel.unacked.iter().cloned().collect();
                for (seq, payload) in resend {
                    self.out.push(Output::Send {
                        peer,
                        message: NetMessage::Data { seq, ack, payload },
                    });
                }
                self.update_member(peer);
            }
            (Conn::Up { last_tx, .. }, NetMessage::Keepalive { ack }) => {
                let p = self.peers.get_mut(&peer).expect("known peer");
                p.conn = Conn::Up {
                    last_rx: now,
                    last_tx,
                };
                p.channel.ack(ack);
            }
            (Conn::Up { last_tx, .. }, NetMessage::Data { seq, ack, payload }) => {
                let p = self.peers.get_mut(&peer).expect("known peer");
                p.conn = Conn::Up {
                    last_rx: now,
                    last_tx,
                };
                p.channel.ack(ack);
                if seq == p.channel.received + 1 {
                    p.channel.received = seq;
                    if let Some(generation) = p.member.filter(|&g| g == p.channel.generation) {
                        self.out.push(Output::Deliver {
                            node: peer,
                            generation,
                            payload,
                        });
                    } else {
                        p.channel.early.push(payload);
                    }
                } else if seq > p.channel.received + 1 {
                    // A gap cannot happen on one FIFO connection: a broken peer.
                    self.out.push(Output::Close { peer });
                    self.connection_lost(peer, false);
                }
            }
            _ => {
                // Anything else out of order is a protocol violation.
                self.out.push(Output::Close { peer });
                self.connection_lost(peer, false);
            }
        }
    }

    /// The connection to `peer` is gone; `refused` when the handshake failed.
    fn connection_lost(&mut self, peer: u8, refused: bool) {
        let now = self.now;
        let delay = Millis::from(self.config.reconnect_delay_ms);
        let quorum_delay = self.config.quorum_delay_ms();
        let heartbeating = self.heartbeating_peer(peer);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let was_up = matches!(p.conn, Conn::Up { .. });
        p.conn = Conn::None {
            retry_at: now + delay,
        };
        if was_up && !refused && heartbeating && p.hold_until.is_none() {
            p.hold_until = Some(now + quorum_delay);
        }
    }

    /// A peer heartbeats once its sector changed after our first read, until
    /// `threshold` consecutive reads find it unchanged (o2hb's rule; the host reads
    /// the region once per heartbeat interval, so that is about the dead time).
    fn heartbeating_peer(&self, peer: u8) -> bool {
        let threshold = self.config.heartbeat_threshold;
        self.peers
            .get(&peer)
            .is_some_and(|p| p.disk.changed && p.disk.equal_samples < threshold)
    }

    fn on_disk(&mut self, peer: u8, generation: u64, sequence: u64) {
        if peer == self.config.local {
            if self.reported.is_none()
                && generation != 0
                && generation != self.config.generation
                && self.own_previous.is_none()
            {
                self.own_previous = Some(generation);
            }
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let first = !p.disk.read;
        p.disk.read = true;
        if (generation, sequence) == (p.disk.generation, p.disk.sequence) {
            p.disk.equal_samples = p.disk.equal_samples.saturating_add(1);
        } else {
            let new_generation = p.disk.generation != generation;
            let old_generation = p.disk.generation;
            if new_generation
                && !first
                && old_generation != 0
                && p.member.is_none()
                && !p.disk.reported_dead
            {
                // It restarted before we saw its old incarnation die (or join): that
                // one is gone and may have held locks in a view we were not in.
                self.out.push(Output::Dead {
                    node: peer,
                    generation: old_generation,
                });
            }
            p.disk.generation = generation;
            p.disk.sequence = sequence;
            p.disk.equal_samples = 0;
            if new_generation {
                p.disk.reported_dead = false;
            }
            if !first && generation != 0 {
                p.disk.changed = true;
            }
            if new_generation && generation != 0 && !first {
                self.incarnation_seen(peer, generation);
            }
        }
        self.update_member(peer);
    }

    /// `peer` showed itself with `generation`: a member of another generation died.
    fn incarnation_seen(&mut self, peer: u8, generation: u64) {
        let p = self.peers.get_mut(&peer).expect("known peer");
        if let Some(old) = p.member {
            if old != generation {
                p.member = None;
                p.channel.reset(0);
                self.out.push(Output::Dead {
                    node: peer,
                    generation: old,
                });
            }
        }
    }

    fn update_member(&mut self, peer: u8) {
        let heartbeating = self.heartbeating_peer(peer);
        // Nobody joins before the start-up reads of the region are done and the
        // stale incarnations they found were reported.
        let steady = self.reported.is_some();
        let p = self.peers.get_mut(&peer).expect("known peer");
        let up = matches!(p.conn, Conn::Up { .. });
        match p.member {
            None => {
                if steady && !up && !heartbeating && p.disk.changed && !p.disk.reported_dead {
                    // It heartbeat after our start but died before it joined: its
                    // locks (if it had any in another view) need recovery too.
                    p.disk.reported_dead = true;
                    self.out.push(Output::Dead {
                        node: peer,
                        generation: p.disk.generation,
                    });
                } else if up && heartbeating && steady && p.disk.generation == p.hello_generation {
                    let generation = p.hello_generation;
                    p.member = Some(generation);
                    if p.channel.generation != generation {
                        p.channel.reset(generation);
                    }
                    p.hold_until = None;
                    self.out.push(Output::Joined {
                        node: peer,
                        generation,
                    });
                    for payload in std::mem::take(&mut p.channel.early) {
                        self.out.push(Output::Deliver {
                            node: peer,
                            generation,
                            payload,
                        });
                    }
                }
            }
            Some(generation) => {
                if !up && !heartbeating {
                    p.disk.reported_dead = true;
                    p.member = None;
                    p.hold_until = None;
                    p.channel.reset(0);
                    self.out.push(Output::Dead {
                        node: peer,
                        generation,
                    });
                }
            }
        }
    }

    fn on_time(&mut self) {
        let now = self.now;
        if self.fenced.is_none() && now >= self.steady_at {
            let nodes = self.heartbeating();
            let threshold = self.config.heartbeat_threshold;
            if self.reported.is_none() {
                // Sectors left by incarnations that stopped before we started
                // (our own previous one too): dead, so they get recovered.
                let mut stale: Vec<(u8, u64)> = self
                    .peers
                    .iter()
                    .filter(|(n, p)| {
                        p.member.is_none()
                            && p.disk.generation != 0
                            && !nodes.contains(n)
                            && p.disk.equal_samples >= threshold
                    })
                    .map(|(&n, p)| (n, p.disk.generation))
                    .collect();
                stale.extend(self.own_previous.map(|g| (self.config.local, g)));
                for (node, generation) in stale {
                    self.out.push(Output::Dead { node, generation });
                }
            }
            if self.reported.as_ref() != Some(&nodes) {
                self.reported = Some(nodes.clone());
                self.out.push(Output::Heartbeating { nodes });
            }
        }
        if now >= self.next_beat {
            self.sequence += 1;
            self.out.push(Output::WriteHeartbeat {
                sequence: self.sequence,
            });
            self.next_beat = now + Millis::from(self.config.heartbeat_interval_ms);
        }
        let idle = Millis::from(self.config.idle_timeout_ms);
        let keepalive = Millis::from(self.config.keepalive_delay_ms);
        let local = self.config.local;
        let peers: Vec<u8> = self.peers.keys().copied().collect();
        let mut decide = false;
        for peer in peers {
            let p = self.peers.get_mut(&peer).expect("known peer");
            match p.conn {
                Conn::None { retry_at } if now >= retry_at && local > peer => {
                    p.conn = Conn::Connecting;
                    self.out.push(Output::Connect { peer });
                }
                Conn::Handshaking { since, .. } if now.saturating_sub(since) >= idle => {
                    self.out.push(Output::Close { peer });
                    self.connection_lost(peer, true);
                }
                Conn::Up { last_rx, .. } if now.saturating_sub(last_rx) >= idle => {
                    self.out.push(Output::Close { peer });
                    self.connection_lost(peer, false);
                }
                Conn::Up { last_rx, last_tx } if now.saturating_sub(last_tx) >= keepalive => {
                    p.conn = Conn::Up {
                        last_rx,
                        last_tx: now,
                    };
                    let ack = p.channel.received;
                    self.out.push(Output::Send {
                        peer,
                        message: NetMessage::Keepalive { ack },
                    });
                }
                _ => {}
            }
            if !self.heartbeating_peer(peer) {
                self.peers.get_mut(&peer).expect("known peer").hold_until = None;
            }
            self.update_member(peer);
            let p = &self.peers[&peer];
            if p.hold_until.is_some_and(|t| now >= t) {
                self.peers.get_mut(&peer).expect("known peer").hold_until = None;
                decide = true;
            }
        }
        if decide {
            self.make_decision();
        }
    }

    /// Peers whose heartbeat sector changed within the dead time.
    pub fn heartbeating(&self) -> BTreeSet<u8> {
        self.peers
            .keys()
            .copied()
            .filter(|&n| self.heartbeating_peer(n))
            .collect()
    }

    /// o2quo's rule, counting ourselves as heartbeating and connected.
    fn make_decision(&mut self) {
        let local = self.config.local;
        let mut heartbeating = self.heartbeating();
        heartbeating.insert(local);
        let connected = self.connected().intersection(&heartbeating).count() + 1;
        let total = heartbeating.len();
        let lowest = *heartbeating.iter().next().expect("we heartbeat");
        let lowest_reachable = lowest == local || self.connected().contains(&lowest);
        let (needed, fence) = if total % 2 == 1 {
            let quorum = total.div_ceil(2);
            (quorum, connected < quorum)
        } else {
            let quorum = total / 2;
            (
                quorum,
                connected < quorum || (connected == quorum && !lowest_reachable),
            )
        };
        if fence {
            self.fence(FenceReason::QuorumLost {
                heartbeating: total,
                connected,
                needed,
                lowest,
            });
        }
    }

    fn fence(&mut self, reason: FenceReason) {
        self.out.clear();
        self.out.push(Output::Fence {
            reason: reason.clone(),
        });
        self.fenced = Some(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(local: u8, generation: u64) -> MembershipConfig {
        MembershipConfig {
            cluster: "tclust".into(),
            local,
            nodes: [0, 1].into(),
            generation,
            idle_timeout_ms: 3000,
            keepalive_delay_ms: 1000,
            reconnect_delay_ms: 1000,
            heartbeat_threshold: 3,
            heartbeat_interval_ms: 2000,
        }
    }

    fn hello_of(outputs: &[Output]) -> Hello {
        outputs
            .iter()
            .find_map(|o| match o {
                Output::Send {
                    message: NetMessage::Hello(h),
                    ..
                } => Some(h.clone()),
                _ => None,
            })
            .expect("a Hello")
    }

    #[test]
    fn the_seed_settings_give_o2cb_timeouts() {
        let s = O2cbSettings {
            heartbeat_threshold: 21,
            ..O2cbSettings::default()
        };
        let c = MembershipConfig::new("tclust", 0, [0, 1].into(), 1, &s);
        assert_eq!(c.dead_time_ms(), 40_000);
        assert_eq!(c.quorum_delay_ms(), 46_000);
    }

    #[test]
    fn handshake_refusals_say_why() {
        let mut m = Membership::new(config(0, 7), 0);
        let out = m.handle(0, Input::Connected { peer: 9 });
        assert!(out.contains(&Output::Refused {
            peer: 9,
            error: HandshakeError::UnknownNode { node: 9 }
        }));
        let mut peer = Membership::new(
            MembershipConfig {
                idle_timeout_ms: 5000,
                ..config(1, 8)
            },
            0,
        );
        let theirs = hello_of(&peer.handle(0, Input::Connected { peer: 0 }));
        m.handle(0, Input::Connected { peer: 1 });
        let out = m.handle(
            0,
            Input::Received {
                peer: 1,
                message: NetMessage::Hello(theirs.clone()),
            },
        );
        let refused = out
            .iter()
            .find_map(|o| match o {
                Output::Refused { error, .. } => Some(error.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            refused.to_string(),
            "peer's idle timeout is 5000 ms, ours is 3000 ms"
        );
        assert!(out.contains(&Output::Close { peer: 1 }));
        m.handle(0, Input::Connected { peer: 1 });
        let out = m.handle(
            0,
            Input::Received {
                peer: 1,
                message: NetMessage::Hello(Hello {
                    cluster: "other".into(),
                    idle_timeout_ms: 3000,
                    ..theirs
                }),
            },
        );
        assert!(out.iter().any(|o| matches!(
            o,
            Output::Refused {
                error: HandshakeError::WrongCluster { .. },
                ..
            }
        )));
    }

    #[test]
    fn even_split_keeps_the_lowest_node() {
        for local in [0u8, 1] {
            let other = 1 - local;
            let mut m = Membership::new(config(local, 5 + u64::from(local)), 0);
            let mut peer = Membership::new(config(other, 5 + u64::from(other)), 0);
            m.handle(0, Input::Connected { peer: other });
            let h = hello_of(&peer.handle(0, Input::Connected { peer: local }));
            m.handle(
                0,
                Input::Received {
                    peer: other,
                    message: NetMessage::Hello(h),
                },
            );
            let g = 5 + u64::from(other);
            let mut joined = false;
            let mut t = 0;
            for seq in 1..8 {
                t += 2000;
                let out = m.handle(
                    t,
                    Input::DiskHeartbeat {
                        peer: other,
                        generation: g,
                        sequence: seq,
                    },
                );
                joined |= out.contains(&Output::Joined {
                    node: other,
                    generation: g,
                });
                m.handle(
                    t,
                    Input::Received {
                        peer: other,
                        message: NetMessage::Keepalive { ack: 0 },
                    },
                );
            }
            assert!(joined);
            m.handle(t, Input::Disconnected { peer: other });
            let mut fenced = false;
            let mut seq = 8;
            while t < 60_000 && !fenced {
                t += 500;
                let input = if t % 2000 == 0 {
                    seq += 1;
                    Input::DiskHeartbeat {
                        peer: other,
                        generation: g,
                        sequence: seq,
                    }
                } else {
                    Input::Tick
                };
                let out = m.handle(t, input);
                fenced |= out.iter().any(|o| matches!(o, Output::Fence { .. }));
            }
            assert_eq!(fenced, local == 1, "node {local}");
        }
    }
}
