//! The replication engine: DRBD's behaviour for one resource on one node, as a
//! sans-IO state machine.
//!
//! [`Resource`] does no I/O and keeps no clock. The host (the node daemon, or the
//! simulator in the tests) feeds it [`Event`]s — an application write, a disk
//! completion, a message from a peer, a connection made or lost, an administrator's
//! command, a timer tick — and carries out the [`Action`]s it returns, in order:
//! write or read the local disk, persist meta-data, send a message, complete the
//! application's request. So the whole of DRBD's logic (roles, generation UUIDs and
//! the sync decision, the activity log, the out-of-sync bitmap, resync, protocols
//! A/B/C, barriers) can be driven by a deterministic simulation with a lossy
//! network and crashing disks, and the same code runs in the daemon.
//!
//! I/O is in whole 4 KiB blocks (the device is exposed with a 4 KiB logical block
//! size, so the kernel never sends less).
//!
//! Modules: [`bitmap`] (out-of-sync blocks), [`uuids`] (generations and the sync
//! decision), [`digest`] (block digests for online verify), [`message`] (what
//! peers say and its wire encoding), [`resource`] (the state machine).

pub mod bitmap;
pub mod digest;
pub mod message;
pub mod resource;
pub mod uuids;

pub use bitmap::Bitmap;
pub use digest::VerifyAlg;
pub use message::{Message, Protocol};
pub use resource::{
    Action, Admin, AdminError, Config, Event, IoError, Meta, Note, OnIoError, PeerMeta, Resource,
};

/// A node's number within a resource (`node-id` in the configuration).
pub type NodeId = u8;

/// The unit of replication, resync and the bitmap.
pub const BLOCK_SIZE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// DRBD's disk states, as far as tandem uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    Diskless,
    /// Holds data that may be partly old (a sync target, or never synced).
    Inconsistent,
    /// Consistent but known to be older than a peer's.
    Outdated,
    UpToDate,
}

/// The state of the connection to one peer (DRBD's `cstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Not trying to connect (`disconnect`, or refused after a split brain).
    StandAlone,
    Connecting,
    Connected,
}

/// The replication state with one peer (DRBD's `replication:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplState {
    /// Not connected, or connected and still exchanging UUIDs and bitmaps.
    Off,
    Established,
    SyncSource,
    SyncTarget,
    /// Online verify, this node comparing (it ran `drbdadm verify`).
    VerifyS,
    /// Online verify, the peer comparing.
    VerifyT,
}

impl ReplState {
    /// Established, or verifying (which replicates writes as Established does).
    pub fn is_established(self) -> bool {
        matches!(
            self,
            ReplState::Established | ReplState::VerifyS | ReplState::VerifyT
        )
    }
}
