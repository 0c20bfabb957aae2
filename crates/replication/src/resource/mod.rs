//! One resource on one node: the state machine.
//!
//! Rules it keeps (DRBD's):
//! - Only a Primary takes application I/O. Promotion needs UpToDate data (or
//!   `--force`, which starts a new data generation) and, while connected, every
//!   peer's consent, so two connected nodes never both become Primary without
//!   `allow-two-primaries` (a lower node id wins a race).
//! - Before a write touches an extent that is not in the activity log, the
//!   extended log is persisted; after a crash, every block of the logged extents is
//!   treated as out of sync.
//! - A write is sent to every connected peer and completes, by protocol, when the
//!   local write is done and the peer has it: A when sent, B when received, C when
//!   written. A peer that is away gets the block's bit set in its bitmap.
//! - Writes are grouped in epochs; a barrier closes an epoch and the peer answers it
//!   after flushing its disk. Blocks of epochs not yet confirmed when a connection
//!   is lost are marked out of sync (the peer's cache may have lost them).
//! - A Primary that loses its last connected peer, or is promoted without one,
//!   starts a new generation: current UUID → the peer's bitmap UUID.
//! - On connecting, both sides exchange UUIDs and bitmaps and decide independently
//!   (see [`crate::uuids`]); resync copies the bitmap's blocks from source to target,
//!   and the target becomes UpToDate only after flushing them.
//! - Overlapping writes to the local disk are issued one after another, in arrival
//!   order; resync never reads a block while a write to it is in flight, and drops a
//!   read that an application write overtook.
//! - Online verify (`drbdadm verify`): the source reads runs of blocks and sends
//!   their digests; the target reads its own and says which differ; the source
//!   marks the differing blocks out of sync on both sides (not resynced until the
//!   next handshake, as DRBD). Neither side reads a block under a write, and a
//!   block written on either side while its comparison is under way is left out
//!   (the write itself is replicated, so the comparison would prove nothing).
//! - A handshake between equal generations that finds out-of-sync bits (from a
//!   verify) resyncs them: from the Primary, else from the lower node id.
//! - A Primary may detach its disk while an Established, UpToDate peer in sync
//!   with it promises to keep its own; its writes wait until that peer holds
//!   everything the local disk does. Then it reads from the peer and writes
//!   to peers only, each write done on a peer's WriteAck whatever the
//!   protocol; the peer starts a new generation and marks what it writes for
//!   the diskless Primary, so the disk attached again resyncs exactly that
//!   (on a Primary, at once as sync target: see `detach.rs`).
//! - `on-io-error detach`: a failed disk action lets the disk go at once; what
//!   is under way then stands only if an UpToDate peer confirmed it, and the
//!   next disk attached starts over with a full resync.

mod detach;
mod sync;
mod verify;

use sync::budget_at_start;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::bitmap::Bitmap;
use crate::digest::VerifyAlg;
use crate::message::{Hello, Message, Protocol, DATA_REQUEST_MAX_BLOCKS, VERIFY_RUN_BLOCKS};
use crate::uuids::{self, push_history, HandshakeUuids, SyncDecision, HISTORY_LEN, JUST_CREATED};
use crate::{ConnState, DiskState, NodeId, ReplState, Role, BLOCK_SIZE};

/// The longest run of blocks one resync read (and message) carries: 1 MiB.
/// (Against 256 KiB runs, a window of 64 of these took a 1 GiB full sync
/// from 0.48 to 0.41 s with the lab's disks on the host disk, and from 0.52
/// to 0.42 s with them in RAM, means of six.)
const RESYNC_RUN_BLOCKS: u64 = 256;

/// What a resource is, from the configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub peers: Vec<NodeId>,
    pub protocol: Protocol,
    pub allow_two_primaries: bool,
    /// Device size in 4 KiB blocks.
    pub blocks: u64,
    /// Blocks per activity-log extent (DRBD: 4 MiB = 1024 blocks).
    pub al_extent_blocks: u64,
    /// Extents the activity log holds (DRBD's `al-extents`).
    pub al_extents: usize,
    /// Resync runs (reads or unacknowledged messages of up to 1 MiB) in flight
    /// per peer.
    pub resync_window: usize,
    /// An epoch is closed after this many writes even without a flush or tick.
    pub epoch_writes: u32,
    /// Bytes a resync (or online verify) with one peer may read per tick, the
    /// resync rate (DRBD's `resync-rate`, `c-max-rate`) times the host's tick;
    /// `None`: as fast as the disks and the network go.
    pub resync_budget_per_tick: Option<u64>,
    /// What a failed local disk action does (DRBD's `on-io-error`).
    pub on_io_error: OnIoError,
}

/// DRBD's `on-io-error` policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnIoError {
    /// The error goes to whoever asked (the application's request fails;
    /// a peer's write leaves its blocks out of sync). (`pass_on`, and
    /// `call-local-io-error`, whose handler is not run.)
    PassOn,
    /// The disk is let go at the first error (Diskless): a Primary goes on
    /// with a peer's disk, reading there what the failed read wanted. DRBD's
    /// default.
    Detach,
}

impl Config {
    /// A two-node configuration with DRBD's usual sizes.
    pub fn new(node_id: NodeId, peers: Vec<NodeId>, blocks: u64) -> Config {
        Config {
            node_id,
            peers,
            protocol: Protocol::C,
            allow_two_primaries: false,
            blocks,
            al_extent_blocks: 1024,
            al_extents: 1237,
            resync_window: 16,
            epoch_writes: 256,
            resync_budget_per_tick: None,
            on_io_error: OnIoError::Detach,
        }
    }
}

/// What the host must keep on stable storage (in DRBD's meta-data area).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub current: u64,
    pub history: [u64; HISTORY_LEN],
    /// Never Diskless.
    pub disk: DiskState,
    /// Primary and not cleanly demoted: after a crash, this node is a crashed
    /// Primary.
    pub primary: bool,
    pub peers: Vec<PeerMeta>,
    /// Extents (numbers) that may hold writes not yet on every peer.
    pub activity_log: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMeta {
    pub node_id: NodeId,
    pub bitmap_uuid: u64,
    pub bitmap: Bitmap,
}

impl Meta {
    /// Meta-data as `create-md` leaves it: no data generation yet.
    pub fn fresh(config: &Config) -> Meta {
        Meta {
            current: JUST_CREATED,
            history: [0; HISTORY_LEN],
            disk: DiskState::Inconsistent,
            primary: false,
            peers: config
                .peers
                .iter()
                .map(|&node_id| PeerMeta {
                    node_id,
                    bitmap_uuid: 0,
                    bitmap: Bitmap::new(config.blocks),
                })
                .collect(),
            activity_log: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Primary {
        force: bool,
    },
    Secondary,
    Connect {
        peer: NodeId,
        discard_my_data: bool,
    },
    Disconnect {
        peer: NodeId,
    },
    /// Online verify with a connected, in-sync peer; this node is the source.
    Verify {
        peer: NodeId,
        alg: VerifyAlg,
    },
    /// Give up the local disk (Diskless), once the local I/O in flight is done.
    Detach,
    /// Take the disk back, with the meta-data the host read from it.
    Attach {
        meta: Box<Meta>,
    },
    /// `drbdadm invalidate`: overwrite this node's disk with a connected
    /// UpToDate peer's, every block (a full resync, this node its target).
    Invalidate,
    /// `drbdadm invalidate-remote`: overwrite the peer's disk with this
    /// node's, every block (a full resync, this node its source).
    InvalidateRemote {
        peer: NodeId,
    },
    /// `drbdadm new-current-uuid`: a new generation of this node's UpToDate
    /// data. With `clear_bitmap`, instead, on just-created disks connected to
    /// every peer's just-created disk: all become UpToDate, nothing to sync
    /// (the way to skip the initial full sync of empty disks).
    NewCurrentUuid {
        clear_bitmap: bool,
    },
    /// `drbdadm outdate`: this disconnected Secondary's data are known to be
    /// older than a peer's (promotion then needs `--force`), until a
    /// handshake finds it in sync with an UpToDate peer.
    Outdate,
    /// `drbdadm pause-sync` (`paused`) or `resume-sync` with a peer: no
    /// resync with it while this node or the peer has paused it.
    PauseSync {
        peer: NodeId,
        paused: bool,
    },
    /// The options `drbdadm adjust` changes on a running resource, after the
    /// configuration changed: see [`Config::resync_budget_per_tick`] and
    /// [`Config::on_io_error`].
    Options {
        resync_budget_per_tick: Option<u64>,
        on_io_error: OnIoError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Admin {
        id: u64,
        command: Admin,
    },
    Write {
        id: u64,
        block: u64,
        data: Bytes,
    },
    Read {
        id: u64,
        block: u64,
        count: u64,
    },
    Flush {
        id: u64,
    },
    /// A disk action finished; reads carry their data.
    DiskDone {
        token: u64,
        result: Result<Option<Bytes>, ()>,
    },
    Connected {
        peer: NodeId,
    },
    Disconnected {
        peer: NodeId,
    },
    Received {
        peer: NodeId,
        message: Message,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    DiskWrite {
        token: u64,
        block: u64,
        data: Bytes,
    },
    DiskRead {
        token: u64,
        block: u64,
        count: u64,
    },
    DiskFlush {
        token: u64,
    },
    /// Detach: persist these meta-data as clean (nothing is in flight) and
    /// release the backing disk. No disk action follows until an attach.
    DetachDisk(Meta),
    /// Must be on stable storage before any later action is carried out, and
    /// written with a cache flush of the backing device (as DRBD writes its
    /// activity log): every write completed before it becomes stable too. Evicting
    /// an extent from the activity log relies on that.
    PersistMeta(Meta),
    Send {
        peer: NodeId,
        message: Message,
    },
    /// Keep trying to connect to the peer until `Connected` (or `Disconnect`).
    Connect {
        peer: NodeId,
    },
    /// Close the connection to the peer and stop trying.
    Disconnect {
        peer: NodeId,
    },
    Complete {
        id: u64,
        result: Result<Option<Bytes>, IoError>,
    },
    AdminDone {
        id: u64,
        result: Result<(), AdminError>,
    },
    Note(Note),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    #[error("not Primary (the device refuses I/O on a Secondary)")]
    NotPrimary,
    #[error("no UpToDate data on this node")]
    NoUpToDateData,
    #[error("beyond the end of the device, or not whole 4 KiB blocks")]
    OutOfRange,
    #[error("the local disk failed")]
    Disk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("a peer is Primary and allow-two-primaries is not set")]
    PeerIsPrimary,
    #[error("need access to UpToDate data (use --force to start from this disk)")]
    NoUpToDateData,
    #[error("the device is in use")]
    Busy,
    #[error("no such peer")]
    UnknownPeer,
    #[error("a promotion is already under way")]
    PromotionPending,
    #[error("a connection is being established; try again")]
    Handshaking,
    #[error("need a connection to start verify or resync")]
    NeedConnection,
    #[error("a Primary keeps its disk unless a connected peer has UpToDate data")]
    PrimaryDetach,
    #[error(
        "a Primary without UpToDate data of its own reads and writes this disk (demote it first)"
    )]
    DisklessPrimaryUses,
    #[error("a Primary attaches a disk only while connected to its one peer, with UpToDate data to resync it from")]
    PrimaryAttach,
    #[error("the device is attached to a disk (use detach first)")]
    Attached,
    #[error("a Primary cannot become sync target (demote it first)")]
    PrimarySyncTarget,
    #[error("the disk is not a just-created one (Inconsistent, never synced)")]
    NotJustCreated,
    #[error("refusing to be Outdated while connected")]
    ConnectedOutdate,
    #[error("a Primary is not outdated (demote it first)")]
    PrimaryOutdate,
}

/// Things worth telling the administrator about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    SyncStarted {
        peer: NodeId,
        source: bool,
        blocks: u64,
    },
    SyncFinished {
        peer: NodeId,
        /// Blocks this node copied in the resync: sent as its source, or
        /// received and kept as its target (a Primary target drops what its
        /// application wrote since the resync started; a block sent again
        /// counts again).
        copied: u64,
    },
    SplitBrain {
        peer: NodeId,
    },
    UnrelatedData {
        peer: NodeId,
    },
    /// The handshake found a reason not to go on (sizes, roles, protocol...).
    Refused {
        peer: NodeId,
        reason: String,
    },
    ProtocolError {
        peer: NodeId,
        reason: String,
    },
    /// The peer asked for something this node's state does not allow:
    /// `what` it asked.
    RequestRefused {
        peer: NodeId,
        what: &'static str,
    },
    ConcurrentWrite {
        peer: NodeId,
        block: u64,
    },
    VerifyStarted {
        peer: NodeId,
        source: bool,
    },
    /// Online verify ended; `found` blocks differ (now marked out of sync).
    VerifyFinished {
        peer: NodeId,
        found: u64,
    },
    /// The connection went before the verify ended.
    VerifyAborted {
        peer: NodeId,
    },
    /// A local disk action failed and `on-io-error detach` let the disk go.
    DiskFailed,
    /// Both sides' generations and what was decided from them.
    Handshake {
        peer: NodeId,
        mine: HandshakeUuids,
        theirs: HandshakeUuids,
        decision: SyncDecision,
    },
}

/// What a disk action was for, to act on its completion.
#[derive(Debug, Clone)]
enum Op {
    AppWrite {
        id: u64,
        block: u64,
        count: u64,
        /// On a Primary that is a sync target: its source (peer index) and
        /// that connection's number, which this write was sent on.
        source: Option<(usize, u64)>,
    },
    AppRead {
        id: u64,
        block: u64,
        count: u64,
    },
    AppFlush {
        id: u64,
    },
    PeerWrite {
        peer: usize,
        gen: u64,
        seq: u64,
        block: u64,
        count: u64,
        /// Answer with WriteAck once written: protocol C, or a sender without
        /// UpToDate data (no disk, or one still a sync target), which counts
        /// on this copy.
        write_ack: bool,
    },
    ResyncRead {
        peer: usize,
        gen: u64,
        block: u64,
        count: u64,
    },
    /// A part of the run `run` (see `Peer::resync_parts`) a sync target writes.
    ResyncWrite {
        peer: usize,
        gen: u64,
        block: u64,
        count: u64,
        run: u64,
    },
    BarrierFlush {
        peer: usize,
        gen: u64,
        epoch: u64,
    },
    SyncDoneFlush {
        peer: usize,
        gen: u64,
        current: u64,
    },
    /// The verify source reads a run to digest it.
    VerifyRead {
        peer: usize,
        gen: u64,
        block: u64,
        count: u64,
    },
    /// A read for a diskless Primary peer's `DataRequest`.
    ServeRead {
        peer: usize,
        gen: u64,
        req: u64,
    },
    /// The verify target reads a run to compare it with the source's digests.
    OvTargetRead {
        peer: usize,
        gen: u64,
        block: u64,
        alg: VerifyAlg,
        digests: Vec<u8>,
    },
}

/// An application request waiting for its local part and its peers.
#[derive(Debug)]
struct Request {
    local_done: bool,
    local_failed: bool,
    waiting: Vec<Wait>,
    /// Peers (bit per index) with an UpToDate disk that confirmed it, while
    /// still connected: a peer that went away may have lost what it had not
    /// flushed.
    confirmed_by: u64,
    /// No local copy that counts (a Primary without a disk, with one still a
    /// sync target, or whose disk failed under `on-io-error detach`): it
    /// succeeds only if some UpToDate peer confirmed it.
    needs_peer: bool,
    /// Sent by a Primary without UpToDate data: only the peer's WriteAck
    /// confirms it, whatever the protocol (the peer sends one for such
    /// writes).
    awaits_write_ack: bool,
}

/// An application read a diskless Primary asked a peer for, in parts of at
/// most [`DATA_REQUEST_MAX_BLOCKS`].
#[derive(Debug)]
struct RemoteRead {
    parts: Vec<Option<Bytes>>,
    missing: usize,
}

/// One `DataRequest` in flight: which read, which part, to which peer.
#[derive(Debug)]
struct RemotePart {
    id: u64,
    index: usize,
    peer: usize,
    count: u64,
}

/// A peer's `DataRequest`, waiting here until no write to its blocks is in
/// flight (the peer must read every write it sent before asking).
#[derive(Debug)]
struct ServeRead {
    peer: usize,
    gen: u64,
    req: u64,
    block: u64,
    count: u64,
}

/// What a request still waits for from a peer (by peer index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The ack of a replicated write (protocol B or C).
    Ack { peer: usize, seq: u64 },
    /// The barrier ack that makes every write up to an epoch stable on the peer.
    Barrier { peer: usize, epoch: u64 },
}

impl Request {
    /// Peer `p` confirmed what the waits `confirmed` picks out; with
    /// `up_to_date`, its disk is UpToDate, so its copy counts as the data.
    fn confirm(&mut self, p: usize, up_to_date: bool, confirmed: impl Fn(&Wait) -> bool) {
        let before = self.waiting.len();
        self.waiting.retain(|w| !confirmed(w));
        if self.waiting.len() < before && up_to_date {
            self.confirmed_by |= 1 << p;
        }
    }
}

impl Wait {
    fn peer(self) -> usize {
        match self {
            Wait::Ack { peer, .. } | Wait::Barrier { peer, .. } => peer,
        }
    }
}

#[derive(Debug)]
struct Peer {
    id: NodeId,
    /// The administrator wants this connection (`connect`, not `disconnect`).
    wanted: bool,
    discard_my_data: bool,
    conn: ConnState,
    repl: ReplState,
    /// Counts connections, so completions of a lost connection are not answered.
    gen: u64,
    role: Option<Role>,
    disk: Option<DiskState>,
    bitmap_uuid: u64,
    bitmap: Bitmap,
    hello: Option<Hello>,
    their_bitmap: Option<Bitmap>,
    // Sending application writes.
    seq: u64,
    epoch: u64,
    epoch_writes: u32,
    /// (epoch, first block, count) of writes whose epoch the peer has not confirmed.
    transfer_log: Vec<(u64, u64, u64)>,
    /// seq → request id, for writes waiting for this peer's ack.
    awaiting: HashMap<u64, u64>,
    /// seq → (block, count) of my writes the peer has not acked (dual-primary
    /// conflict detection).
    unacked: HashMap<u64, (u64, u64)>,
    // Receiving writes.
    peer_writes: u32,
    barrier_pending: Option<u64>,
    barrier_flushing: bool,
    // Resync as source.
    resync_cursor: u64,
    /// Blocks sent (source) or written (target) since this resync started.
    resync_copied: u64,
    resync_reading: HashSet<u64>,
    resync_dirtied: HashSet<u64>,
    resync_sent: HashSet<u64>,
    // Resync as target: each run received, by number, as (first block,
    // blocks, parts still being written); acked once all its parts are.
    resync_parts: HashMap<u64, (u64, u64, u32)>,
    next_run: u64,
    /// A Primary that is this peer's sync target: blocks its application
    /// wrote here since the resync started (newer than any resync data).
    target_written: HashSet<u64>,
    /// A Primary that attached a disk, until its source answers its
    /// `TargetBitmap`: what came before the answer is of the diskless time.
    awaiting_source_bitmap: bool,
    /// Runs (reads, or data sent and not yet acked) in flight.
    resync_runs: usize,
    /// Bytes the resync or verify with this peer may still read before the
    /// next tick (below zero after a run larger than what was left).
    resync_budget: i64,
    /// Everything was copied and SyncDone sent; waiting for the target to say
    /// it is UpToDate (after flushing) before the generations move on.
    sync_done_sent: bool,
    /// `pause-sync` here (kept across connections until `resume-sync`), and
    /// on the peer (as it last said on this connection).
    paused_here: bool,
    paused_by_peer: bool,
    /// This node promised the peer (a Primary about to detach) to keep its
    /// disk, and has not yet heard the peer's new state.
    lends_disk: bool,
    /// At the handshake, the two sides' data were one generation (always,
    /// with a disk on both sides; with one diskless side, only if its
    /// current UUID is the other's): a diskless Primary reads only from such
    /// a peer.
    same_data: bool,
    // Resync as target.
    resync_writes: u32,
    sync_done: Option<u64>,
    verify: Verify,
}

/// Online verify with one peer, either side.
#[derive(Debug, Default)]
struct Verify {
    alg: Option<VerifyAlg>,
    /// Source: the next block to read.
    cursor: u64,
    /// Source: runs read or awaiting the target's reply.
    runs: usize,
    /// Blocks whose comparison is under way (source: from its read until the
    /// reply; target: during its read).
    busy: HashSet<u64>,
    /// Busy blocks a write overtook: left out of the comparison.
    dirtied: HashSet<u64>,
    /// Blocks compared (for `done:`).
    done: u64,
    found: u64,
    /// Target: requests waiting until no write to their blocks is in flight.
    queue: VecDeque<(u64, VerifyAlg, Vec<u8>)>,
}

impl Peer {
    /// Forgets a resync under way with this peer, either side.
    fn clear_resync(&mut self) {
        self.resync_reading.clear();
        self.resync_dirtied.clear();
        self.resync_sent.clear();
        self.resync_parts.clear();
        self.target_written.clear();
        self.awaiting_source_bitmap = false;
        self.resync_runs = 0;
        self.sync_done_sent = false;
        self.sync_done = None;
    }

    fn handshake_done(&self) -> bool {
        self.conn == ConnState::Connected && self.repl != ReplState::Off
    }

    /// Connected and with a disk: the application's writes reach it.
    fn receives_writes(&self) -> bool {
        self.handshake_done() && self.disk.is_some_and(|d| d != DiskState::Diskless)
    }
}

#[derive(Debug)]
struct PendingPromotion {
    id: u64,
    tid: u64,
    force: bool,
    waiting: Vec<usize>,
}

/// One resource on one node. See the module documentation for the rules.
#[derive(Debug)]
pub struct Resource {
    config: Config,
    role: Role,
    disk: DiskState,
    current: u64,
    history: [u64; HISTORY_LEN],
    crashed_primary: bool,
    peers: Vec<Peer>,
    /// Activity log, least recently used first.
    activity_log: VecDeque<u64>,
    requests: HashMap<u64, Request>,
    ops: HashMap<u64, Op>,
    next_token: u64,
    /// Local disk writes in flight, per block.
    writes_in_flight: BTreeMap<u64, u32>,
    /// Local disk writes waiting for an overlapping one to finish.
    deferred_writes: VecDeque<(u64, u64, Bytes)>,
    /// Application writes waiting for a handshake or an activity-log slot.
    blocked_writes: VecDeque<(u64, u64, Bytes)>,
    promotion: Option<PendingPromotion>,
    next_tid: u64,
    rng: u64,
    out: Vec<Action>,
    /// A detach waiting for the local I/O in flight (its admin request).
    detaching: Option<DetachCause>,
    /// The disk's state when it was detached (what its meta-data keep).
    detached_disk: DiskState,
    /// The disk was let go after an I/O error (`on-io-error detach`): the
    /// next one attached starts over (see `attach`).
    last_disk_failed: bool,
    /// The generation (current UUID, history) of a disk being detached: a
    /// diskless Primary may take a newer one from its peer meanwhile, which
    /// this disk does not have.
    detached_generation: Option<(u64, [u64; HISTORY_LEN])>,
    /// The current UUID the last detached disk was left with: a Primary that
    /// attaches it again resyncs only what its peer marked since (see
    /// `attach`), if the disk still says so.
    left_disk_at: Option<u64>,
    /// Diskless Primary: application reads under way on peers, by request id,
    /// and their parts in flight, by `DataRequest` number.
    remote_reads: HashMap<u64, RemoteRead>,
    remote_parts: HashMap<u64, RemotePart>,
    next_req: u64,
    /// Peers' `DataRequest`s not yet read, in arrival order.
    serve_queue: VecDeque<ServeRead>,
    /// A Primary's detach waiting for a peer's promise to keep its disk.
    keep_disk_ask: Option<KeepDiskAsk>,
    /// A Primary's detach the peer promised to serve (its admin request,
    /// the peer): application writes are held until every earlier one is
    /// done here and stable on that peer, so the peer's disk holds all the
    /// local one does when the Primary lets it go.
    primary_detach: Option<(u64, usize)>,
}

/// Why the disk is being let go.
#[derive(Debug, Clone, Copy)]
enum DetachCause {
    /// `drbdadm detach` (its admin request).
    Admin(u64),
    /// A failed disk action under `on-io-error detach`.
    IoError,
}

/// A Primary's detach asking peer `peer` (`KeepDiskRequest` number `tid`).
#[derive(Debug)]
struct KeepDiskAsk {
    id: u64,
    tid: u64,
    peer: usize,
}

impl Resource {
    /// Brings a resource up from its meta-data (after `create-md`, a clean `down`
    /// or a crash). `seed` feeds the generator of new UUIDs.
    pub fn open(config: Config, meta: Meta, seed: u64) -> (Resource, Vec<Action>) {
        let peers = config
            .peers
            .iter()
            .map(|&id| {
                let stored = meta.peers.iter().find(|p| p.node_id == id);
                Peer {
                    id,
                    wanted: false,
                    discard_my_data: false,
                    conn: ConnState::StandAlone,
                    repl: ReplState::Off,
                    gen: 0,
                    role: None,
                    disk: None,
                    bitmap_uuid: stored.map_or(0, |p| p.bitmap_uuid),
                    bitmap: stored
                        .map(|p| Bitmap::from_words(config.blocks, p.bitmap.words().to_vec()))
                        .unwrap_or_else(|| Bitmap::new(config.blocks)),
                    hello: None,
                    their_bitmap: None,
                    seq: 0,
                    epoch: 1,
                    epoch_writes: 0,
                    transfer_log: Vec::new(),
                    awaiting: HashMap::new(),
                    unacked: HashMap::new(),
                    peer_writes: 0,
                    barrier_pending: None,
                    barrier_flushing: false,
                    resync_cursor: 0,
                    resync_parts: HashMap::new(),
                    next_run: 0,
                    target_written: HashSet::new(),
                    awaiting_source_bitmap: false,
                    resync_copied: 0,
                    resync_reading: HashSet::new(),
                    resync_dirtied: HashSet::new(),
                    resync_sent: HashSet::new(),
                    resync_runs: 0,
                    resync_budget: budget_at_start(config.resync_budget_per_tick),
                    sync_done_sent: false,
                    paused_here: false,
                    paused_by_peer: false,
                    lends_disk: false,
                    same_data: false,
                    resync_writes: 0,
                    sync_done: None,
                    verify: Verify::default(),
                }
            })
            .collect();
        let mut resource = Resource {
            role: Role::Secondary,
            disk: if meta.disk == DiskState::Diskless {
                DiskState::Inconsistent
            } else {
                meta.disk
            },
            current: meta.current,
            history: meta.history,
            crashed_primary: meta.primary,
            peers,
            activity_log: VecDeque::new(),
            requests: HashMap::new(),
            ops: HashMap::new(),
            next_token: 1,
            writes_in_flight: BTreeMap::new(),
            deferred_writes: VecDeque::new(),
            blocked_writes: VecDeque::new(),
            promotion: None,
            next_tid: 1,
            rng: seed | 1,
            out: Vec::new(),
            detaching: None,
            detached_disk: DiskState::Inconsistent,
            detached_generation: None,
            left_disk_at: None,
            last_disk_failed: false,
            remote_reads: HashMap::new(),
            remote_parts: HashMap::new(),
            next_req: 1,
            serve_queue: VecDeque::new(),
            keep_disk_ask: None,
            primary_detach: None,
            config,
        };
        // Whatever the log names may differ from the peers: mark it, then the log
        // can start empty.
        for extent in &meta.activity_log {
            let first = extent * resource.config.al_extent_blocks;
            for peer in &mut resource.peers {
                peer.bitmap
                    .set_range(first, resource.config.al_extent_blocks);
            }
        }
        if !meta.activity_log.is_empty() {
            resource.persist();
        }
        let actions = std::mem::take(&mut resource.out);
        (resource, actions)
    }

    /// Handles one event; returns what the host must do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Admin { id, command } => self.admin(id, command),
            Event::Write { id, block, data } => self.app_write(id, block, data),
            Event::Read { id, block, count } => self.app_read(id, block, count),
            Event::Flush { id } => self.app_flush(id),
            Event::DiskDone { token, result } => self.disk_done(token, result),
            Event::Connected { peer } => self.connected(peer),
            Event::Disconnected { peer } => {
                if let Some(p) = self.peer_index(peer) {
                    if self.peers[p].conn != ConnState::StandAlone {
                        self.lost_connection(p);
                    }
                }
            }
            Event::Received { peer, message } => {
                if let Some(p) = self.peer_index(peer) {
                    if self.peers[p].conn == ConnState::Connected {
                        self.received(p, message);
                    }
                }
            }
            Event::Tick => {
                self.close_epochs();
                let per_tick = budget_at_start(self.config.resync_budget_per_tick);
                for p in 0..self.peers.len() {
                    // What a tick grants does not pile up while nothing syncs.
                    let budget = &mut self.peers[p].resync_budget;
                    *budget = (*budget).saturating_add(per_tick).min(per_tick);
                    self.pump_resync(p);
                    self.pump_verify(p);
                    self.pump_verify_target(p);
                }
            }
        }
        self.maybe_finish_primary_detach();
        std::mem::take(&mut self.out)
    }

    // ----- what the host and the status display read -----

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn disk(&self) -> DiskState {
        self.disk
    }

    pub fn current_uuid(&self) -> u64 {
        self.current
    }

    pub fn conn_state(&self, peer: NodeId) -> Option<ConnState> {
        self.peer_index(peer).map(|p| self.peers[p].conn)
    }

    pub fn repl_state(&self, peer: NodeId) -> Option<ReplState> {
        self.peer_index(peer).map(|p| self.peers[p].repl)
    }

    pub fn peer_role(&self, peer: NodeId) -> Option<Role> {
        self.peer_index(peer).and_then(|p| self.peers[p].role)
    }

    pub fn peer_disk(&self, peer: NodeId) -> Option<DiskState> {
        self.peer_index(peer).and_then(|p| self.peers[p].disk)
    }

    /// Blocks out of sync with a peer (what resync still has to copy).
    /// Whether resync with a peer is paused: (by this node, by the peer).
    pub fn resync_paused(&self, peer: NodeId) -> Option<(bool, bool)> {
        let p = &self.peers[self.peer_index(peer)?];
        Some((p.paused_here, p.paused_by_peer))
    }

    pub fn out_of_sync(&self, peer: NodeId) -> Option<u64> {
        self.peer_index(peer).map(|p| self.peers[p].bitmap.count())
    }

    /// Online verify with a peer: (blocks compared, blocks of the device), while
    /// it runs (VerifyS or VerifyT).
    pub fn verify_progress(&self, peer: NodeId) -> Option<(u64, u64)> {
        let p = &self.peers[self.peer_index(peer)?];
        matches!(p.repl, ReplState::VerifyS | ReplState::VerifyT)
            .then_some((p.verify.done.min(self.config.blocks), self.config.blocks))
    }

    /// No request, disk action or resync under way.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
            && self.ops.is_empty()
            && self.remote_reads.is_empty()
            && self.serve_queue.is_empty()
            && self.blocked_writes.is_empty()
            && self.deferred_writes.is_empty()
            && self.peers.iter().all(|p| p.verify.queue.is_empty())
    }

    /// Internal queues, for diagnostics.
    pub fn debug_state(&self) -> String {
        let waits: Vec<String> = self
            .requests
            .iter()
            .map(|(id, r)| {
                format!(
                    "{id}:{}{:?}",
                    if r.local_done { "done" } else { "local" },
                    r.waiting
                )
            })
            .collect();
        format!(
            "requests [{}] ops {} blocked {} deferred {} al {:?} tl {:?}",
            waits.join(" "),
            self.ops.len(),
            self.blocked_writes.len(),
            self.deferred_writes.len(),
            self.activity_log,
            self.peers
                .iter()
                .map(|p| p.transfer_log.len())
                .collect::<Vec<_>>()
        )
    }

    pub fn meta(&self) -> Meta {
        Meta {
            current: self.current,
            history: self.history,
            disk: if self.disk == DiskState::Diskless {
                self.detached_disk
            } else {
                self.disk
            },
            primary: self.role == Role::Primary || self.crashed_primary,
            peers: self
                .peers
                .iter()
                .map(|p| PeerMeta {
                    node_id: p.id,
                    bitmap_uuid: p.bitmap_uuid,
                    bitmap: p.bitmap.clone(),
                })
                .collect(),
            activity_log: self.activity_log.iter().copied().collect(),
        }
    }

    // ----- administration -----

    fn admin(&mut self, id: u64, command: Admin) {
        let result = match command {
            Admin::Primary { force } => return self.promote(id, force),
            Admin::Secondary => self.demote(),
            Admin::Connect {
                peer,
                discard_my_data,
            } => match self.peer_index(peer) {
                None => Err(AdminError::UnknownPeer),
                Some(p) => {
                    let peer = &mut self.peers[p];
                    peer.wanted = true;
                    peer.discard_my_data = discard_my_data;
                    if peer.conn == ConnState::StandAlone {
                        peer.conn = ConnState::Connecting;
                        let id = peer.id;
                        self.out.push(Action::Connect { peer: id });
                    }
                    Ok(())
                }
            },
            Admin::Detach => return self.detach(id),
            Admin::Invalidate => self.invalidate(),
            Admin::Outdate => self.outdate(),
            Admin::NewCurrentUuid { clear_bitmap } => self.new_current_uuid(clear_bitmap),
            Admin::PauseSync { peer, paused } => match self.peer_index(peer) {
                None => Err(AdminError::UnknownPeer),
                Some(p) => {
                    self.peers[p].paused_here = paused;
                    // Once connected, our Hello (which carries a pause) is
                    // sent: a change goes after it, and after our Bitmap,
                    // so the peer hears it with its handshake done.
                    if self.peers[p].conn == ConnState::Connected {
                        self.out.push(Action::Send {
                            peer,
                            message: Message::SyncPause { paused },
                        });
                    }
                    self.pump_resync(p);
                    Ok(())
                }
            },
            Admin::Options {
                resync_budget_per_tick: budget_per_tick,
                on_io_error,
            } => {
                self.config.on_io_error = on_io_error;
                self.config.resync_budget_per_tick = budget_per_tick;
                let start = budget_at_start(budget_per_tick);
                for p in 0..self.peers.len() {
                    // A lower rate holds from now on, a higher one from the
                    // next tick; no limit at all, at once.
                    let budget = &mut self.peers[p].resync_budget;
                    *budget = match budget_per_tick {
                        None => start,
                        Some(_) => (*budget).min(start),
                    };
                    self.pump_resync(p);
                    self.pump_verify(p);
                }
                Ok(())
            }
            Admin::InvalidateRemote { peer } => match self.peer_index(peer) {
                None => Err(AdminError::UnknownPeer),
                Some(p) => self.invalidate_remote(p),
            },
            Admin::Attach { meta } => self.attach(*meta),
            Admin::Verify { peer, alg } => match self.peer_index(peer) {
                None => Err(AdminError::UnknownPeer),
                Some(p) => self.start_verify(p, alg),
            },
            Admin::Disconnect { peer } => match self.peer_index(peer) {
                None => Err(AdminError::UnknownPeer),
                Some(p) => {
                    self.peers[p].wanted = false;
                    if self.peers[p].conn != ConnState::StandAlone {
                        self.out.push(Action::Disconnect { peer });
                        self.lost_connection(p);
                    }
                    Ok(())
                }
            },
        };
        self.out.push(Action::AdminDone { id, result });
    }

    fn promote(&mut self, id: u64, force: bool) {
        let refuse = |this: &mut Resource, error| {
            this.out.push(Action::AdminDone {
                id,
                result: Err(error),
            })
        };
        if self.role == Role::Primary {
            return self.out.push(Action::AdminDone { id, result: Ok(()) });
        }
        if self.promotion.is_some() {
            return refuse(self, AdminError::PromotionPending);
        }
        if self
            .peers
            .iter()
            .any(|p| p.conn == ConnState::Connected && p.repl == ReplState::Off)
        {
            return refuse(self, AdminError::Handshaking);
        }
        let syncing_from_peer = self.peers.iter().any(|p| p.repl == ReplState::SyncTarget);
        if syncing_from_peer
            || (self.disk != DiskState::UpToDate && !force)
            || self.disk == DiskState::Diskless
        {
            return refuse(self, AdminError::NoUpToDateData);
        }
        if !self.config.allow_two_primaries
            && self
                .peers
                .iter()
                .any(|p| p.handshake_done() && p.role == Some(Role::Primary))
        {
            return refuse(self, AdminError::PeerIsPrimary);
        }
        let waiting: Vec<usize> = (0..self.peers.len())
            .filter(|&p| self.peers[p].handshake_done())
            .collect();
        if waiting.is_empty() {
            self.do_promote(force);
            return self.out.push(Action::AdminDone { id, result: Ok(()) });
        }
        // Ask every connected peer first: a two-phase state change.
        let tid = self.next_tid;
        self.next_tid += 1;
        for &p in &waiting {
            let peer = self.peers[p].id;
            self.out.push(Action::Send {
                peer,
                message: Message::PromoteRequest { tid },
            });
        }
        self.promotion = Some(PendingPromotion {
            id,
            tid,
            force,
            waiting,
        });
    }

    fn do_promote(&mut self, force: bool) {
        if self.disk != DiskState::UpToDate {
            // --force: this disk's data become the truth, as a new generation.
            self.disk = DiskState::UpToDate;
            if self.current != JUST_CREATED {
                push_history(&mut self.history, self.current);
            }
            self.current = self.new_uuid();
            for p in 0..self.peers.len() {
                let peer = &self.peers[p];
                if peer.handshake_done() && peer.disk != Some(DiskState::UpToDate) {
                    self.start_full_sync_as_source(p);
                }
            }
        } else {
            debug_assert!(!force || self.disk == DiskState::UpToDate);
        }
        // Writing without some peer starts a new generation for that peer.
        if self.peers.iter().any(|p| !p.receives_writes()) {
            self.new_generation(false);
        }
        self.role = Role::Primary;
        self.persist();
        self.broadcast_state();
        self.drain_blocked();
    }

    fn demote(&mut self) -> Result<(), AdminError> {
        if self.role == Role::Secondary {
            return Ok(());
        }
        if !self.requests.is_empty()
            || !self.blocked_writes.is_empty()
            || !self.remote_reads.is_empty()
            || self.primary_detach.is_some()
        {
            return Err(AdminError::Busy);
        }
        self.role = Role::Secondary;
        self.crashed_primary = false;
        self.persist();
        self.broadcast_state();
        Ok(())
    }

    /// A Primary goes on without some peer: the current UUID becomes that peer's
    /// bitmap UUID (once per divergence) and a new current UUID is made; peers that
    /// are in sync take the new UUID too. `always` (`new-current-uuid`) makes
    /// one even when no peer needs it, the old one kept in the history.
    fn new_generation(&mut self, always: bool) {
        if self.current == JUST_CREATED || self.disk != DiskState::UpToDate {
            return;
        }
        let needs = self
            .peers
            .iter()
            .any(|p| !p.receives_writes() && p.bitmap_uuid == 0);
        if !needs && !always {
            return;
        }
        let old = self.current;
        if always {
            push_history(&mut self.history, old);
        }
        for peer in &mut self.peers {
            if !peer.receives_writes() && peer.bitmap_uuid == 0 {
                peer.bitmap_uuid = old;
            }
        }
        self.current = self.new_uuid();
        // Connected peers in sync with us share the generation: tell them.
        // (Resync targets learn it from SyncDone.)
        let current = self.current;
        for p in 0..self.peers.len() {
            let peer = &self.peers[p];
            let serves_diskless_primary = peer.disk == Some(DiskState::Diskless)
                && peer.role == Some(Role::Primary)
                && peer.same_data;
            if peer.handshake_done()
                && peer.repl.is_established()
                && (peer.disk == Some(DiskState::UpToDate) || serves_diskless_primary)
            {
                let id = peer.id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::SyncDone { current },
                });
            }
        }
    }

    fn new_uuid(&mut self) -> u64 {
        loop {
            // xorshift64*: deterministic for a seed, which the simulation needs.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let uuid = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) & !1;
            if uuid > JUST_CREATED && uuid != self.current && !self.history.contains(&uuid) {
                return uuid;
            }
        }
    }

    fn broadcast_state(&mut self) {
        let (role, disk) = (self.role, self.disk);
        for p in 0..self.peers.len() {
            if self.peers[p].handshake_done() {
                let peer = self.peers[p].id;
                self.out.push(Action::Send {
                    peer,
                    message: Message::State { role, disk },
                });
            }
        }
    }

    // ----- application I/O -----

    fn check_range(&self, block: u64, count: u64) -> bool {
        count > 0
            && block
                .checked_add(count)
                .is_some_and(|end| end <= self.config.blocks)
    }

    fn app_write(&mut self, id: u64, block: u64, data: Bytes) {
        if self.role != Role::Primary {
            return self.complete(id, Err(IoError::NotPrimary));
        }
        if !self.has_data() {
            return self.complete(id, Err(IoError::NoUpToDateData));
        }
        if !data.len().is_multiple_of(BLOCK_SIZE)
            || !self.check_range(block, (data.len() / BLOCK_SIZE) as u64)
        {
            return self.complete(id, Err(IoError::OutOfRange));
        }
        self.blocked_writes.push_back((id, block, data));
        self.drain_blocked();
    }

    /// Starts blocked application writes, in order, as far as possible.
    fn drain_blocked(&mut self) {
        // Writes wait while this Primary hands its I/O to a peer (see
        // `maybe_finish_primary_detach`).
        if self.primary_detach.is_some() {
            return;
        }
        // Writes wait while a peer is exchanging UUIDs and bitmaps: the bitmap it
        // was sent must stay true.
        if self
            .peers
            .iter()
            .any(|p| p.conn == ConnState::Connected && p.repl == ReplState::Off)
        {
            return;
        }
        while let Some((id, block, data)) = self.blocked_writes.pop_front() {
            if self.role != Role::Primary || !self.has_data() {
                self.complete(id, Err(IoError::NotPrimary));
                continue;
            }
            let count = (data.len() / BLOCK_SIZE) as u64;
            // No disk, no activity log: nothing here to resync after a crash.
            if self.disk != DiskState::Diskless && !self.activity_log_admit(block, count) {
                self.blocked_writes.push_front((id, block, data));
                return;
            }
            self.start_write(id, block, data, count);
        }
    }

    /// Makes sure the extents of a write are in the activity log, persisting the
    /// log if it changes. False if no slot can be freed now.
    fn activity_log_admit(&mut self, block: u64, count: u64) -> bool {
        let size = self.config.al_extent_blocks;
        let first = block / size;
        let last = (block + count - 1) / size;
        let missing: Vec<u64> = (first..=last)
            .filter(|e| !self.activity_log.contains(e))
            .collect();
        let free = self
            .config
            .al_extents
            .saturating_sub(self.activity_log.len());
        if missing.len() > free {
            // Evict idle extents, least recently used first: no local write in
            // flight and no write a peer has not confirmed.
            let mut need = missing.len() - free;
            let mut keep = VecDeque::new();
            while let Some(extent) = self.activity_log.pop_front() {
                if need > 0 && (first..=last).all(|e| e != extent) && self.extent_idle(extent) {
                    need -= 1;
                } else {
                    keep.push_back(extent);
                }
            }
            self.activity_log = keep;
            if need > 0 {
                return false;
            }
        }
        for e in first..=last {
            if let Some(pos) = self.activity_log.iter().position(|x| *x == e) {
                self.activity_log.remove(pos);
            }
            self.activity_log.push_back(e);
        }
        if !missing.is_empty() {
            self.persist();
        }
        true
    }

    fn extent_idle(&self, extent: u64) -> bool {
        let size = self.config.al_extent_blocks;
        let (start, end) = (extent * size, (extent + 1) * size);
        let overlaps = |b: u64, c: u64| b < end && b + c > start;
        self.writes_in_flight.range(start..end).next().is_none()
            && !self
                .deferred_writes
                .iter()
                .any(|(_, b, d)| overlaps(*b, (d.len() / BLOCK_SIZE) as u64))
            && !self.ops.values().any(
                |op| matches!(op, Op::AppWrite { block, count, .. } if overlaps(*block, *count)),
            )
            && !self
                .peers
                .iter()
                .any(|p| p.transfer_log.iter().any(|(_, b, c)| overlaps(*b, *c)))
    }

    fn start_write(&mut self, id: u64, block: u64, data: Bytes, count: u64) {
        let mut waiting = Vec::new();
        let diskless = self.disk == DiskState::Diskless;
        // Without UpToDate data here (no disk, or one still a sync target),
        // a write stands only once an UpToDate peer has written it.
        let needs_peer = self.disk != DiskState::UpToDate;
        // A sync target's own copy may yet be overwritten from its source
        // (should the source crash and the resync start over): the write
        // stands once the source has it on stable storage (a barrier each).
        let needs_stable_peer = self.disk == DiskState::Inconsistent;
        let mut source = None;
        for p in 0..self.peers.len() {
            let protocol = self.config.protocol;
            let peer = &mut self.peers[p];
            if !peer.receives_writes() {
                peer.bitmap.set_range(block, count);
                continue;
            }
            peer.seq += 1;
            let seq = peer.seq;
            for b in block..block + count {
                if peer.resync_reading.contains(&b) {
                    peer.resync_dirtied.insert(b);
                }
            }
            peer.transfer_log.push((peer.epoch, block, count));
            peer.epoch_writes += 1;
            if needs_stable_peer {
                waiting.push(Wait::Barrier {
                    peer: p,
                    epoch: peer.epoch,
                });
            }
            if peer.repl == ReplState::SyncTarget {
                // The source applies this before any resync data it reads
                // later; what it sent earlier is older than this write.
                peer.target_written.extend(block..block + count);
                source = Some((p, peer.gen));
            }
            // Without UpToDate data here, whatever the protocol, a write is
            // done when a peer has written it (its WriteAck).
            if protocol != Protocol::A || needs_peer {
                peer.awaiting.insert(seq, id);
                waiting.push(Wait::Ack { peer: p, seq });
            }
            if self.config.allow_two_primaries {
                peer.unacked.insert(seq, (block, count));
            }
            let message = Message::Data {
                seq,
                epoch: peer.epoch,
                block,
                data: data.clone(),
            };
            let peer_id = peer.id;
            self.out.push(Action::Send {
                peer: peer_id,
                message,
            });
        }
        self.requests.insert(
            id,
            Request {
                local_done: diskless,
                local_failed: false,
                confirmed_by: 0,
                needs_peer,
                awaits_write_ack: needs_peer,
                waiting,
            },
        );
        if diskless {
            self.try_complete(id);
        } else {
            let token = self.token(Op::AppWrite {
                id,
                block,
                count,
                source,
            });
            self.submit_write(token, block, data);
        }
        if needs_stable_peer
            || self
                .peers
                .iter()
                .any(|p| p.epoch_writes >= self.config.epoch_writes)
        {
            self.close_epochs();
        }
    }

    fn app_read(&mut self, id: u64, block: u64, count: u64) {
        if self.role != Role::Primary {
            return self.complete(id, Err(IoError::NotPrimary));
        }
        if !self.has_data() {
            return self.complete(id, Err(IoError::NoUpToDateData));
        }
        if !self.check_range(block, count) {
            return self.complete(id, Err(IoError::OutOfRange));
        }
        if self.disk == DiskState::Diskless || self.lacks_any(block, count) {
            return self.remote_read(id, block, count);
        }
        let token = self.token(Op::AppRead { id, block, count });
        self.out.push(Action::DiskRead {
            token,
            block,
            count,
        });
    }

    fn app_flush(&mut self, id: u64) {
        if self.role != Role::Primary {
            return self.complete(id, Err(IoError::NotPrimary));
        }
        if !self.has_data() {
            return self.complete(id, Err(IoError::NoUpToDateData));
        }
        // Every write completed so far must reach stable storage here and on each
        // connected peer: close the epochs and wait for the barrier acks.
        self.close_epochs();
        let waiting: Vec<Wait> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.handshake_done())
            .filter_map(|(i, p)| {
                let epoch = p.transfer_log.iter().map(|(e, _, _)| *e).max()?;
                Some(Wait::Barrier { peer: i, epoch })
            })
            .collect();
        let diskless = self.disk == DiskState::Diskless;
        self.requests.insert(
            id,
            Request {
                local_done: diskless,
                local_failed: false,
                confirmed_by: 0,
                // Without UpToDate data here, only a peer's flush counts.
                needs_peer: self.disk != DiskState::UpToDate && !waiting.is_empty(),
                awaits_write_ack: false,
                waiting,
            },
        );
        if diskless {
            self.try_complete(id);
        } else {
            let token = self.token(Op::AppFlush { id });
            self.out.push(Action::DiskFlush { token });
        }
    }

    /// Sends a barrier to every connected peer whose epoch holds writes.
    fn close_epochs(&mut self) {
        for p in 0..self.peers.len() {
            let peer = &mut self.peers[p];
            if peer.handshake_done() && peer.epoch_writes > 0 {
                let epoch = peer.epoch;
                peer.epoch += 1;
                peer.epoch_writes = 0;
                let id = peer.id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::Barrier { epoch },
                });
            }
        }
    }

    fn complete(&mut self, id: u64, result: Result<Option<Bytes>, IoError>) {
        self.out.push(Action::Complete { id, result });
    }

    fn try_complete(&mut self, id: u64) {
        let done = self
            .requests
            .get(&id)
            .is_some_and(|r| r.local_done && r.waiting.is_empty());
        if done {
            let request = self.requests.remove(&id).expect("checked");
            let result = if request.local_failed {
                Err(IoError::Disk)
            } else if request.needs_peer && request.confirmed_by == 0 {
                // No disk here and no peer confirmed it: it is nowhere.
                Err(IoError::NoUpToDateData)
            } else {
                Ok(None)
            };
            self.complete(id, result);
        }
    }

    // ----- the local disk -----

    fn token(&mut self, op: Op) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.ops.insert(token, op);
        token
    }

    fn overlaps_in_flight(&self, block: u64, count: u64) -> bool {
        self.writes_in_flight
            .range(block..block + count)
            .next()
            .is_some()
    }

    /// Issues a local write, or queues it behind an overlapping one.
    fn submit_write(&mut self, token: u64, block: u64, data: Bytes) {
        let count = (data.len() / BLOCK_SIZE) as u64;
        for peer in &mut self.peers {
            let verify = &mut peer.verify;
            if !verify.busy.is_empty() {
                for b in block..block + count {
                    if verify.busy.contains(&b) {
                        verify.dirtied.insert(b);
                    }
                }
            }
        }
        let queued_overlap = self
            .deferred_writes
            .iter()
            .any(|(_, b, d)| *b < block + count && b + (d.len() / BLOCK_SIZE) as u64 > block);
        if self.overlaps_in_flight(block, count) || queued_overlap {
            self.deferred_writes.push_back((token, block, data));
            return;
        }
        self.issue_write(token, block, data);
    }

    fn issue_write(&mut self, token: u64, block: u64, data: Bytes) {
        let count = (data.len() / BLOCK_SIZE) as u64;
        for b in block..block + count {
            *self.writes_in_flight.entry(b).or_insert(0) += 1;
        }
        self.out.push(Action::DiskWrite { token, block, data });
    }

    fn write_finished(&mut self, block: u64, count: u64) {
        for b in block..block + count {
            if let Some(n) = self.writes_in_flight.get_mut(&b) {
                *n -= 1;
                if *n == 0 {
                    self.writes_in_flight.remove(&b);
                }
            }
        }
        // Start deferred writes that no longer overlap anything before them.
        let mut still = VecDeque::new();
        while let Some((token, b, data)) = self.deferred_writes.pop_front() {
            let c = (data.len() / BLOCK_SIZE) as u64;
            let blocked_by_earlier = still.iter().any(|(_, eb, ed): &(u64, u64, Bytes)| {
                *eb < b + c && eb + (ed.len() / BLOCK_SIZE) as u64 > b
            });
            if blocked_by_earlier || self.overlaps_in_flight(b, c) {
                still.push_back((token, b, data));
            } else {
                self.issue_write(token, b, data);
            }
        }
        self.deferred_writes = still;
        self.pump_serve_reads();
    }

    fn disk_done(&mut self, token: u64, result: Result<Option<Bytes>, ()>) {
        // Under `on-io-error detach` the disk goes first, so that what the
        // completion tells peers (an ack) follows the news that this disk is
        // gone.
        if result.is_err()
            && self.config.on_io_error == OnIoError::Detach
            && self.disk != DiskState::Diskless
            && self.ops.contains_key(&token)
        {
            self.disk_failed();
        }
        self.disk_done_op(token, result);
        self.maybe_finish_detach();
    }

    fn disk_done_op(&mut self, token: u64, result: Result<Option<Bytes>, ()>) {
        let Some(op) = self.ops.remove(&token) else {
            return;
        };
        let ok = result.is_ok();
        match op {
            Op::AppWrite {
                id,
                block,
                count,
                source,
            } => {
                self.write_finished(block, count);
                if let (true, Some((p, gen))) = (ok, source) {
                    // A Primary that is a sync target now holds these blocks'
                    // latest data, which its source got on the same connection.
                    let peer = &mut self.peers[p];
                    if peer.gen == gen && peer.repl == ReplState::SyncTarget {
                        for b in block..block + count {
                            peer.bitmap.clear(b);
                        }
                    }
                }
                if !ok {
                    // Not on this disk: it differs from every peer that has it.
                    // They mark it too: this disk may not take the record.
                    for p in 0..self.peers.len() {
                        self.peers[p].bitmap.set_range(block, count);
                        // A sync target takes its source's copy of them.
                        for b in block..block + count {
                            self.peers[p].target_written.remove(&b);
                        }
                        if self.peers[p].handshake_done() {
                            let id = self.peers[p].id;
                            self.out.push(Action::Send {
                                peer: id,
                                message: Message::OutOfSync {
                                    block,
                                    count: count as u32,
                                },
                            });
                        }
                    }
                }
                let on_peers = self.disk == DiskState::Diskless;
                if let Some(r) = self.requests.get_mut(&id) {
                    r.local_done = true;
                    if !ok {
                        // With the disk gone, the write stands if a peer has it.
                        r.needs_peer |= on_peers;
                        r.local_failed = !on_peers;
                    }
                }
                self.try_complete(id);
                self.after_local_write();
            }
            Op::AppRead { id, block, count } => match result {
                // The disk is gone: a peer's UpToDate disk may serve it.
                Err(()) if self.disk == DiskState::Diskless && self.role == Role::Primary => {
                    self.remote_read(id, block, count)
                }
                result => self.complete(id, result.map_err(|_| IoError::Disk)),
            },
            Op::ServeRead { peer, gen, req } => {
                let p = &self.peers[peer];
                if p.gen == gen && p.handshake_done() {
                    let id = p.id;
                    self.out.push(Action::Send {
                        peer: id,
                        message: Message::DataReply {
                            req,
                            data: result.ok().flatten(),
                        },
                    });
                }
            }
            Op::AppFlush { id } => {
                let on_peers = self.disk == DiskState::Diskless;
                if let Some(r) = self.requests.get_mut(&id) {
                    r.local_done = true;
                    if !ok {
                        // With the disk gone, it stands if peers flush.
                        let peers_flush = on_peers && !r.waiting.is_empty();
                        r.needs_peer |= peers_flush;
                        r.local_failed = !peers_flush;
                    }
                }
                self.try_complete(id);
            }
            Op::PeerWrite {
                peer,
                gen,
                seq,
                block,
                count,
                write_ack,
            } => {
                self.write_finished(block, count);
                let p = &mut self.peers[peer];
                p.peer_writes -= 1;
                if p.gen == gen && p.conn == ConnState::Connected {
                    if !ok {
                        // The block is not here: it is out of sync with the peer.
                        p.bitmap.set_range(block, count);
                    }
                    let id = p.id;
                    if !ok && p.disk != Some(DiskState::UpToDate) {
                        // The sender has no UpToDate copy (no disk, or one
                        // still a sync target) and there is no negative ack:
                        // dropping the connection fails its write.
                        let note = Note::Refused {
                            peer: id,
                            reason:
                                "a write of a Primary without UpToDate data failed on this disk"
                                    .into(),
                        };
                        self.drop_connection(peer, note, false);
                    } else if write_ack {
                        self.out.push(Action::Send {
                            peer: id,
                            message: Message::WriteAck { seq },
                        });
                    }
                }
                // Also after a write of an earlier connection: a barrier of this
                // one may have been waiting for it.
                self.maybe_flush_for_barrier(peer);
                self.after_local_write();
            }
            Op::ResyncRead {
                peer,
                gen,
                block,
                count,
            } => {
                let p = &mut self.peers[peer];
                if p.gen != gen || p.repl != ReplState::SyncSource {
                    return;
                }
                let mut overtaken = false;
                for b in block..block + count {
                    p.resync_reading.remove(&b);
                    overtaken |= p.resync_dirtied.remove(&b);
                }
                if overtaken || !ok {
                    // An application write overtook the read: read again later.
                    p.resync_runs = p.resync_runs.saturating_sub(1);
                    self.pump_resync(peer);
                    return;
                }
                p.resync_sent.extend(block..block + count);
                p.resync_copied += count;
                let data = result.ok().flatten().unwrap_or_default();
                let id = p.id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::ResyncData { block, data },
                });
                self.pump_resync(peer);
            }
            Op::ResyncWrite {
                peer,
                gen,
                block,
                count,
                run,
            } => {
                self.write_finished(block, count);
                let p = &mut self.peers[peer];
                p.resync_writes -= 1;
                if p.gen == gen && p.conn == ConnState::Connected && ok {
                    for b in block..block + count {
                        p.bitmap.clear(b);
                    }
                    self.resync_part_written(peer, run);
                }
                self.maybe_finish_target(peer);
                self.after_local_write();
            }
            Op::BarrierFlush { peer, gen, epoch } => {
                // A disk that failed (and is gone) answers too: the peer heard
                // it is gone first, and counts on it no more.
                let answer = ok || self.disk == DiskState::Diskless;
                let p = &mut self.peers[peer];
                p.barrier_flushing = false;
                if p.gen == gen && p.conn == ConnState::Connected && answer {
                    let id = p.id;
                    self.out.push(Action::Send {
                        peer: id,
                        message: Message::BarrierAck { epoch },
                    });
                }
                self.maybe_flush_for_barrier(peer);
            }
            Op::SyncDoneFlush { peer, gen, current } => {
                let p = &self.peers[peer];
                if p.gen != gen
                    || p.conn != ConnState::Connected
                    || p.repl != ReplState::SyncTarget
                    || !ok
                {
                    return;
                }
                self.finish_target(peer, current);
            }
            Op::VerifyRead {
                peer,
                gen,
                block,
                count,
            } => self.verify_read_done(peer, gen, block, count, result.ok().flatten()),
            Op::OvTargetRead {
                peer,
                gen,
                block,
                alg,
                digests,
            } => {
                self.verify_target_read_done(peer, gen, block, alg, &digests, result.ok().flatten())
            }
        }
    }

    /// After a local write: blocked work may go on.
    fn after_local_write(&mut self) {
        self.drain_blocked();
        for p in 0..self.peers.len() {
            match self.peers[p].repl {
                ReplState::SyncSource => self.pump_resync(p),
                ReplState::VerifyS => self.pump_verify(p),
                ReplState::VerifyT => self.pump_verify_target(p),
                _ => {}
            }
        }
    }

    fn persist(&mut self) {
        if self.disk == DiskState::Diskless && self.detaching.is_none() {
            return; // no disk to keep them on
        }
        let meta = self.meta();
        self.out.push(Action::PersistMeta(meta));
    }

    // ----- connections -----

    fn peer_index(&self, peer: NodeId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == peer)
    }

    fn connected(&mut self, peer: NodeId) {
        let Some(p) = self.peer_index(peer) else {
            return;
        };
        if !self.peers[p].wanted {
            self.out.push(Action::Disconnect { peer });
            return;
        }
        if self.peers[p].conn == ConnState::Connected {
            return;
        }
        let hello = Hello {
            node_id: self.config.node_id,
            blocks: self.config.blocks,
            role: self.role,
            disk: self.disk,
            protocol: self.config.protocol,
            allow_two_primaries: self.config.allow_two_primaries,
            crashed_primary: self.crashed_primary,
            discard_my_data: self.peers[p].discard_my_data,
            sync_paused: self.peers[p].paused_here,
            current: self.current,
            bitmap: self.peers[p].bitmap_uuid,
            history: self.history,
        };
        let state = &mut self.peers[p];
        state.conn = ConnState::Connected;
        state.repl = ReplState::Off;
        state.gen += 1;
        state.hello = None;
        state.their_bitmap = None;
        let words = state.bitmap.words().to_vec();
        self.out.push(Action::Send {
            peer,
            message: Message::Hello(hello),
        });
        self.out.push(Action::Send {
            peer,
            message: Message::Bitmap { words },
        });
    }

    /// The connection to peer `p` is gone (or we dropped it).
    fn lost_connection(&mut self, p: usize) {
        let was_in_sync_primary = self.role == Role::Primary && self.peers[p].handshake_done();
        let peer = &mut self.peers[p];
        if peer.sync_done_sent && peer.bitmap_uuid != 0 {
            // The target may or may not have taken our current UUID before the
            // connection went. Forget the old ancestor into the history: if it
            // took it, the next handshake finds our (new) bitmap UUID; if not,
            // its generation is in our history and a full sync follows.
            let old = peer.bitmap_uuid;
            peer.bitmap_uuid = 0;
            push_history(&mut self.history, old);
        }
        let peer = &mut self.peers[p];
        if matches!(peer.repl, ReplState::VerifyS | ReplState::VerifyT) {
            let id = peer.id;
            self.out
                .push(Action::Note(Note::VerifyAborted { peer: id }));
        }
        let peer = &mut self.peers[p];
        peer.verify = Verify::default();
        peer.paused_by_peer = false;
        // Writes the peer has not confirmed as stable may be lost there.
        for (_, block, count) in peer.transfer_log.drain(..) {
            peer.bitmap.set_range(block, count);
        }
        let awaiting: Vec<u64> = peer.awaiting.drain().map(|(_, id)| id).collect();
        peer.unacked.clear();
        peer.conn = if peer.wanted {
            ConnState::Connecting
        } else {
            ConnState::StandAlone
        };
        peer.repl = ReplState::Off;
        peer.role = None;
        peer.disk = None;
        peer.hello = None;
        peer.their_bitmap = None;
        peer.barrier_pending = None;
        peer.clear_resync();
        peer.epoch_writes = 0;
        peer.epoch += 1;
        peer.lends_disk = false;
        let (wanted, id) = (peer.wanted, peer.id);
        self.serve_queue.retain(|r| r.peer != p);
        if let Some(ask) = self.keep_disk_ask.take_if(|a| a.peer == p) {
            self.out.push(Action::AdminDone {
                id: ask.id,
                result: Err(AdminError::PrimaryDetach),
            });
        }
        let reads: Vec<u64> = self
            .remote_parts
            .values()
            .filter(|part| part.peer == p)
            .map(|part| part.id)
            .collect();
        for read in reads {
            self.fail_remote_read(read, IoError::NoUpToDateData);
        }
        for request in self.requests.values_mut() {
            request.waiting.retain(|w| w.peer() != p);
            request.confirmed_by &= !(1 << p);
        }
        for rid in awaiting {
            self.try_complete(rid);
        }
        let flush_ids: Vec<u64> = self.requests.keys().copied().collect();
        for rid in flush_ids {
            self.try_complete(rid);
        }
        if let Some(promotion) = &mut self.promotion {
            promotion.waiting.retain(|q| *q != p);
            if promotion.waiting.is_empty() {
                let promotion = self.promotion.take().expect("present");
                self.do_promote(promotion.force);
                self.out.push(Action::AdminDone {
                    id: promotion.id,
                    result: Ok(()),
                });
            }
        }
        if was_in_sync_primary {
            self.new_generation(false);
        }
        self.persist();
        if wanted {
            self.out.push(Action::Connect { peer: id });
        }
        self.drain_blocked();
    }

    /// Drops a connection for a reason; `stay_away` stops reconnecting.
    fn drop_connection(&mut self, p: usize, note: Note, stay_away: bool) {
        self.out.push(Action::Note(note));
        if stay_away {
            self.peers[p].wanted = false;
        }
        let id = self.peers[p].id;
        self.out.push(Action::Disconnect { peer: id });
        self.lost_connection(p);
        if !stay_away {
            self.peers[p].conn = ConnState::Connecting;
            self.out.push(Action::Connect { peer: id });
        }
    }

    fn protocol_error(&mut self, p: usize, reason: String) {
        let peer = self.peers[p].id;
        self.drop_connection(p, Note::ProtocolError { peer, reason }, false);
    }

    fn received(&mut self, p: usize, message: Message) {
        let handshaking = self.peers[p].repl == ReplState::Off;
        match message {
            Message::Hello(hello) => {
                if !handshaking || self.peers[p].hello.is_some() {
                    return self.protocol_error(p, "a second Hello".into());
                }
                let peer = self.peers[p].id;
                let refuse = |reason: String| Note::Refused { peer, reason };
                if hello.node_id != peer {
                    return self.protocol_error(
                        p,
                        format!(
                            "Hello from node {} on node {peer}'s connection",
                            hello.node_id
                        ),
                    );
                }
                if hello.blocks != self.config.blocks {
                    let note = refuse(format!(
                        "the peer's disk has {} blocks, this one {}",
                        hello.blocks, self.config.blocks
                    ));
                    return self.drop_connection(p, note, true);
                }
                if hello.protocol != self.config.protocol
                    || hello.allow_two_primaries != self.config.allow_two_primaries
                {
                    let note = refuse(
                        "the peer's net options (protocol, allow-two-primaries) differ".into(),
                    );
                    return self.drop_connection(p, note, true);
                }
                // The peer's pause-sync, before any resync the handshake
                // starts (a SyncPause after it overrides it, in order).
                self.peers[p].paused_by_peer = hello.sync_paused;
                self.peers[p].hello = Some(hello);
                self.maybe_decide(p);
            }
            Message::Bitmap { words } => {
                if !handshaking || self.peers[p].their_bitmap.is_some() {
                    return self.protocol_error(p, "a second Bitmap".into());
                }
                if words.len() != self.peers[p].bitmap.words().len() {
                    return self.protocol_error(p, format!("a bitmap of {} words", words.len()));
                }
                self.peers[p].their_bitmap = Some(Bitmap::from_words(self.config.blocks, words));
                self.maybe_decide(p);
            }
            _ if handshaking => {
                self.protocol_error(p, "a message before the handshake ended".into())
            }
            Message::State { role, disk } => {
                if role == Role::Primary
                    && self.role == Role::Primary
                    && !self.config.allow_two_primaries
                {
                    return self.protocol_error(p, "the peer became Primary too".into());
                }
                let peer = &mut self.peers[p];
                peer.role = Some(role);
                // Its state after a KeepDiskRequest: from here on, what the
                // state says counts.
                peer.lends_disk = false;
                let lost_disk = disk == DiskState::Diskless && peer.disk != Some(disk);
                peer.disk = Some(disk);
                if lost_disk {
                    return self.peer_lost_disk(p);
                }
                if peer.repl == ReplState::SyncSource
                    && peer.sync_done_sent
                    && disk == DiskState::UpToDate
                {
                    self.source_confirmed(p);
                }
            }
            Message::PromoteRequest { tid } => {
                let me_first = self
                    .promotion
                    .as_ref()
                    .is_some_and(|_| self.config.node_id < self.peers[p].id);
                let granted =
                    self.config.allow_two_primaries || !(self.role == Role::Primary || me_first);
                let id = self.peers[p].id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::PromoteReply { tid, granted },
                });
            }
            Message::PromoteReply { tid, granted } => {
                let Some(promotion) = &mut self.promotion else {
                    return;
                };
                if promotion.tid != tid {
                    return;
                }
                if !granted {
                    let promotion = self.promotion.take().expect("present");
                    return self.out.push(Action::AdminDone {
                        id: promotion.id,
                        result: Err(AdminError::PeerIsPrimary),
                    });
                }
                promotion.waiting.retain(|q| *q != p);
                if promotion.waiting.is_empty() {
                    let promotion = self.promotion.take().expect("present");
                    self.do_promote(promotion.force);
                    self.out.push(Action::AdminDone {
                        id: promotion.id,
                        result: Ok(()),
                    });
                }
            }
            Message::Data {
                seq,
                epoch: _,
                block,
                data,
            } => self.peer_data(p, seq, block, data),
            Message::RecvAck { seq }
                if self.peers[p].awaiting.get(&seq).is_some_and(|id| {
                    self.requests.get(id).is_some_and(|r| r.awaits_write_ack)
                }) =>
            {
                // Received is not enough for a diskless Primary's write: its
                // WriteAck follows.
            }
            Message::RecvAck { seq } | Message::WriteAck { seq } => {
                let peer = &mut self.peers[p];
                peer.unacked.remove(&seq);
                let up_to_date = peer.disk == Some(DiskState::UpToDate);
                if let Some(id) = peer.awaiting.remove(&seq) {
                    if let Some(r) = self.requests.get_mut(&id) {
                        r.confirm(p, up_to_date, |w| *w == Wait::Ack { peer: p, seq });
                    }
                    self.try_complete(id);
                }
            }
            Message::Barrier { epoch } => {
                let peer = &mut self.peers[p];
                peer.barrier_pending = Some(peer.barrier_pending.map_or(epoch, |e| e.max(epoch)));
                self.maybe_flush_for_barrier(p);
            }
            Message::BarrierAck { epoch } => {
                self.peers[p].transfer_log.retain(|(e, _, _)| *e > epoch);
                let up_to_date = self.peers[p].disk == Some(DiskState::UpToDate);
                let ids: Vec<u64> = self.requests.keys().copied().collect();
                for id in ids {
                    if let Some(r) = self.requests.get_mut(&id) {
                        r.confirm(p, up_to_date, |w| matches!(*w, Wait::Barrier { peer, epoch: e } if peer == p && e <= epoch));
                    }
                    self.try_complete(id);
                }
                self.drain_blocked();
            }
            Message::SyncRequest => {
                let peer = &self.peers[p];
                if self.disk == DiskState::UpToDate
                    && peer.repl == ReplState::Established
                    && peer.role != Some(Role::Primary)
                {
                    self.start_full_sync_as_source(p);
                } else {
                    let note = Note::RequestRefused {
                        peer: peer.id,
                        what: "full resync of it (its invalidate)",
                    };
                    self.out.push(Action::Note(note));
                }
            }
            Message::SyncPause { paused } => {
                self.peers[p].paused_by_peer = paused;
                self.pump_resync(p);
            }
            Message::DataRequest { req, block, count } => {
                let count = u64::from(count);
                if !self.check_range(block, count) {
                    return self.protocol_error(
                        p,
                        format!("a data request for blocks {block}+{count} beyond the device"),
                    );
                }
                let gen = self.peers[p].gen;
                self.serve_queue.push_back(ServeRead {
                    peer: p,
                    gen,
                    req,
                    block,
                    count,
                });
                self.pump_serve_reads();
            }
            Message::DataReply { req, data } => self.data_reply(p, req, data),
            Message::KeepDiskRequest { tid } => {
                let granted = self.disk == DiskState::UpToDate && self.detaching.is_none();
                self.peers[p].lends_disk = granted;
                let id = self.peers[p].id;
                self.out.push(Action::Send {
                    peer: id,
                    message: Message::KeepDiskReply { tid, granted },
                });
            }
            Message::KeepDiskReply { tid, granted } => self.keep_disk_reply(p, tid, granted),
            Message::OutOfSync { block, count } => {
                let count = u64::from(count);
                if !self.check_range(block, count) {
                    return self.protocol_error(
                        p,
                        format!("out-of-sync blocks {block}+{count} beyond the device"),
                    );
                }
                self.peers[p].bitmap.set_range(block, count);
                self.persist();
            }
            Message::SkipSync { current } => {
                let peer = &self.peers[p];
                if self.disk == DiskState::Inconsistent
                    && self.current == JUST_CREATED
                    && peer.repl == ReplState::Established
                    && current != JUST_CREATED
                {
                    self.peers[p].bitmap.clear_all();
                    self.current = current;
                    self.disk = DiskState::UpToDate;
                    self.persist();
                    self.broadcast_state();
                } else {
                    let note = Note::RequestRefused {
                        peer: peer.id,
                        what: "skip of the initial sync (its new-current-uuid --clear-bitmap)",
                    };
                    self.out.push(Action::Note(note));
                }
            }
            Message::SyncStart { .. } if self.disk == DiskState::Diskless => {}
            Message::SyncStart { full } => {
                if self.role == Role::Primary {
                    return self
                        .protocol_error(p, "asked to become sync target while Primary".into());
                }
                self.start_target(p, full);
            }
            Message::TargetBitmap { words } => self.target_bitmap(p, words),
            Message::ResyncData { .. } if self.disk == DiskState::Diskless => {}
            Message::ResyncData { block, data } => {
                let count = (data.len() / BLOCK_SIZE) as u64;
                if self.peers[p].repl != ReplState::SyncTarget || !self.check_range(block, count) {
                    return self.protocol_error(
                        p,
                        format!("resync data for block {block} outside a resync"),
                    );
                }
                self.resync_write(p, block, data);
            }
            Message::ResyncAck { block, count } => {
                let count = u64::from(count);
                if !self.check_range(block, count) {
                    return self.protocol_error(
                        p,
                        format!("a resync ack of blocks {block}+{count} beyond the device"),
                    );
                }
                let peer = &mut self.peers[p];
                // Blocks sent are few; a peer's count may be the whole device.
                let acked: Vec<u64> = if count <= peer.resync_sent.len() as u64 {
                    (block..block + count)
                        .filter(|b| peer.resync_sent.contains(b))
                        .collect()
                } else {
                    let run = block..block + count;
                    peer.resync_sent
                        .iter()
                        .copied()
                        .filter(|b| run.contains(b))
                        .collect()
                };
                for b in acked {
                    peer.resync_sent.remove(&b);
                    peer.bitmap.clear(b);
                }
                peer.resync_runs = peer.resync_runs.saturating_sub(1);
                self.pump_resync(p);
            }
            Message::OvRequest {
                block,
                alg,
                digests,
            } => {
                let count = (digests.len() / alg.digest_len()) as u64;
                if !self.check_range(block, count) {
                    return self.protocol_error(
                        p,
                        format!("a verify request for blocks {block}+{count} beyond the device"),
                    );
                }
                if self.peers[p].repl == ReplState::Established && self.disk == DiskState::UpToDate
                {
                    self.begin_verify(p, alg, false);
                }
                if self.peers[p].repl != ReplState::VerifyT {
                    // Not comparable here (no data): every block counts as in sync.
                    let id = self.peers[p].id;
                    return self.out.push(Action::Send {
                        peer: id,
                        message: Message::OvReply {
                            block,
                            count: count as u32,
                            differ: 0,
                        },
                    });
                }
                self.peers[p].verify.queue.push_back((block, alg, digests));
                self.pump_verify_target(p);
            }
            Message::OvReply { block, count, .. } | Message::OvResult { block, count, .. }
                if !self.check_range(block, u64::from(count)) =>
            {
                self.protocol_error(
                    p,
                    format!("a verify result of blocks {block}+{count} beyond the device"),
                )
            }
            Message::OvReply {
                block,
                count,
                differ,
            } => self.verify_reply(p, block, count, differ),
            Message::OvResult {
                block,
                count: _,
                out_of_sync,
            } => {
                let peer = &mut self.peers[p];
                if peer.repl == ReplState::VerifyT {
                    for i in 0..64 {
                        if out_of_sync & (1 << i) != 0 {
                            peer.bitmap.set_range(block + i, 1);
                        }
                    }
                    peer.verify.found += u64::from(out_of_sync.count_ones());
                }
            }
            Message::VerifyDone { found } => {
                if self.peers[p].repl == ReplState::VerifyT {
                    let peer = &mut self.peers[p];
                    peer.repl = ReplState::Established;
                    peer.verify = Verify::default();
                    let id = peer.id;
                    self.out
                        .push(Action::Note(Note::VerifyFinished { peer: id, found }));
                    self.persist();
                }
            }
            Message::SyncDone { current } => {
                if self.peers[p].repl == ReplState::SyncTarget
                    && !self.peers[p].awaiting_source_bitmap
                {
                    self.peers[p].sync_done = Some(current);
                    self.maybe_finish_target(p);
                } else if (self.peers[p].repl.is_established()
                    || self.peers[p].awaiting_source_bitmap)
                    && (self.disk == DiskState::UpToDate
                        || self.peers[p].awaiting_source_bitmap
                        || (self.disk == DiskState::Diskless
                            && self.role == Role::Primary
                            && self.peers[p].same_data))
                    && current != self.current
                {
                    // A peer in sync with us (or whose disk serves this
                    // diskless Primary) started a new generation.
                    push_history(&mut self.history, self.current);
                    self.current = current;
                    self.persist();
                }
            }
        }
    }

    /// The receiving side of a replicated write.
    fn peer_data(&mut self, p: usize, seq: u64, block: u64, data: Bytes) {
        let count = (data.len() / BLOCK_SIZE) as u64;
        if !self.check_range(block, count) {
            return self.protocol_error(
                p,
                format!("a write to blocks {block}+{count} beyond the device"),
            );
        }
        if self.role == Role::Primary && !self.config.allow_two_primaries {
            return self.protocol_error(p, "a write from a peer while Primary".into());
        }
        let peer_id = self.peers[p].id;
        if self.config.protocol == Protocol::B {
            self.out.push(Action::Send {
                peer: peer_id,
                message: Message::RecvAck { seq },
            });
        }
        // Dual primaries writing the same block at once: the lower node id's data
        // wins on both sides.
        let conflict = self.peers[p]
            .unacked
            .values()
            .any(|(b, c)| *b < block + count && b + c > block);
        if conflict {
            self.out.push(Action::Note(Note::ConcurrentWrite {
                peer: peer_id,
                block,
            }));
            if self.config.node_id < peer_id {
                if self.config.protocol == Protocol::C {
                    self.out.push(Action::Send {
                        peer: peer_id,
                        message: Message::WriteAck { seq },
                    });
                }
                return;
            }
        }
        if self.disk == DiskState::Diskless {
            // Detached: the Primary marks the block out of sync (it learns of
            // the detach before this ack; see `peer_lost_disk`).
            if self.config.protocol == Protocol::C {
                self.out.push(Action::Send {
                    peer: peer_id,
                    message: Message::WriteAck { seq },
                });
            }
            return;
        }
        if self.peers[p].disk == Some(DiskState::Diskless) {
            // A diskless Primary keeps no copy: its disk, attached again, lacks
            // this write. A crash here must not forget that: the write's
            // extents are in the activity log (persisted with the bitmap when
            // the log changes; replayed into every bitmap after a crash)
            // before it is issued, or, with no room in the log, the bitmap
            // itself is persisted.
            self.peers[p].bitmap.set_range(block, count);
            if !self.activity_log_admit(block, count) {
                self.persist();
            }
        }
        let gen = self.peers[p].gen;
        self.peers[p].peer_writes += 1;
        // A sender without UpToDate data (diskless, or a Primary still its sync
        // target) counts on this copy: it waits for the WriteAck.
        let write_ack =
            self.config.protocol == Protocol::C || self.peers[p].disk != Some(DiskState::UpToDate);
        let token = self.token(Op::PeerWrite {
            peer: p,
            gen,
            seq,
            block,
            count,
            write_ack,
        });
        self.submit_write(token, block, data);
    }

    fn maybe_flush_for_barrier(&mut self, p: usize) {
        let peer = &mut self.peers[p];
        if peer.conn != ConnState::Connected || peer.barrier_flushing || peer.peer_writes > 0 {
            return;
        }
        let Some(epoch) = peer.barrier_pending.take() else {
            return;
        };
        if self.disk == DiskState::Diskless && self.detaching.is_none() {
            // No disk: nothing to make stable (the peer marked what we dropped).
            let id = peer.id;
            return self.out.push(Action::Send {
                peer: id,
                message: Message::BarrierAck { epoch },
            });
        }
        peer.barrier_flushing = true;
        let gen = peer.gen;
        let token = self.token(Op::BarrierFlush {
            peer: p,
            gen,
            epoch,
        });
        self.out.push(Action::DiskFlush { token });
    }
}
