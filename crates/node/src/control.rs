//! The control protocol between the command-line tools and the daemon: one JSON
//! [`Request`] line, one JSON [`Response`] line, per connection to the socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster_spec::ClusterSpec;
use crate::spec::ResourceSpec;

/// Where the daemon listens (inside a lab node, its private `/run`).
pub const SOCKET: &str = "/run/tandem/tandemd.sock";

pub fn socket_path() -> PathBuf {
    std::env::var_os("TANDEM_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOCKET))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Up(ResourceSpec),
    Down {
        resource: String,
    },
    Primary {
        resource: String,
        force: bool,
    },
    Secondary {
        resource: String,
    },
    Connect {
        resource: String,
        discard_my_data: bool,
    },
    Disconnect {
        resource: String,
    },
    /// Give up the backing disk (Diskless).
    Detach {
        resource: String,
    },
    /// Take the backing disk back (or `up`, if the resource is not up).
    Attach(ResourceSpec),
    /// A full resync of this node from a connected UpToDate peer.
    Invalidate {
        resource: String,
    },
    /// A full resync of every peer from this node.
    InvalidateRemote {
        resource: String,
    },
    /// Mark this disconnected Secondary's disk Outdated.
    Outdate {
        resource: String,
    },
    /// `pause-sync` (`paused`) or `resume-sync` with every peer.
    PauseSync {
        resource: String,
        paused: bool,
    },
    /// A new current UUID; with `clear_bitmap`, the initial sync of fresh
    /// disks skipped.
    NewCurrentUuid {
        resource: String,
        clear_bitmap: bool,
    },
    /// Online verify with every peer; `alg` is the configured `verify-alg`.
    Verify {
        resource: String,
        alg: String,
    },
    /// Status of one resource, or of all.
    Status {
        resource: Option<String>,
    },
    /// Stop the daemon (after `down` of every resource).
    Shutdown,
    /// Serve a resource over NBD (`listen`: IP:PORT; default this node's
    /// address in the resource, port 10809).
    NbdExport {
        resource: String,
        listen: Option<String>,
    },
    NbdUnexport {
        resource: String,
    },
    /// `o2cb register-cluster`: start the cluster stack (listening, offline).
    ClusterRegister(ClusterSpec),
    /// `o2cb unregister-cluster`.
    ClusterUnregister {
        cluster: String,
    },
    /// `o2cb start-heartbeat`: heartbeat on the regions and join the cluster.
    HeartbeatStart {
        cluster: String,
        regions: Vec<String>,
    },
    /// `o2cb stop-heartbeat`: leave the cluster.
    HeartbeatStop {
        cluster: String,
    },
    ClusterStatus,
    /// Take a lock and hold it while this connection stays open. Answered by
    /// `Granted` (then `Blocking` notices, or an `Error` if the lock is lost);
    /// the client ends with [`Request::Release`] or by closing the connection.
    Lock {
        domain: String,
        name: String,
        /// NL, PR or EX.
        mode: String,
    },
    /// On a `Lock` connection: release it, with a new value block from EX.
    Release {
        lvb: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Status(Vec<ResourceStatus>),
    Cluster(ClusterStatus),
    /// Where an NBD export listens.
    Exported {
        address: String,
    },
    Granted {
        mode: String,
        lvb: Vec<u8>,
    },
    /// Another node waits for `wanted` on a lock this connection holds.
    Blocking {
        wanted: String,
    },
    /// A refusal: the message and drbdadm's exit code for it.
    Error {
        message: String,
        code: i32,
    },
}

/// The state `drbdadm status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    pub role: String,
    pub disk: String,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub node_id: u8,
    /// StandAlone, Connecting or Connected.
    pub connection: String,
    /// Off, Established, SyncSource, SyncTarget, PausedSyncS, PausedSyncT,
    /// VerifyS, VerifyT.
    pub replication: String,
    pub role: Option<String>,
    pub disk: Option<String>,
    /// Blocks still out of sync with this peer.
    pub out_of_sync: u64,
    /// Blocks of the device.
    pub blocks: u64,
    /// Out-of-sync blocks when the current resync started (for `done:`).
    pub sync_total: u64,
    /// Online verify: blocks compared and blocks to compare (VerifyS/VerifyT).
    #[serde(default)]
    pub verify_done: u64,
    #[serde(default)]
    pub verify_total: u64,
    /// Who paused the resync: "user" (this node's `pause-sync`), "peer", or
    /// "user,peer".
    #[serde(default)]
    pub resync_suspended: Option<String>,
}

/// The cluster stack as `o2cb cluster-status` and the lock listing show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub local: u8,
    /// Heartbeating and joined to whoever else is.
    pub online: bool,
    /// Why this node fenced itself, if it did.
    pub fenced: Option<String>,
    /// This start's incarnation (0 before the first start).
    pub generation: u64,
    pub regions: Vec<String>,
    pub nodes: Vec<NodeStatus>,
    pub domains: Vec<DomainLocks>,
    /// Lock-manager messages sent since registration.
    pub messages_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub number: u8,
    pub name: String,
    pub address: String,
    pub local: bool,
    pub member: bool,
    pub connected: bool,
    pub heartbeating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainLocks {
    pub domain: String,
    pub locks: Vec<LockInfo>,
}

/// A lock resource: mastered here (all holders and waiters), or held here and
/// mastered elsewhere (our own mode only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub name: String,
    pub master: u8,
    pub holders: Vec<(u8, String)>,
    pub waiting: Vec<(u8, String)>,
}

/// Sends one request to the daemon at `socket` and waits for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> std::io::Result<Response> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad answer from the daemon: {e}"),
        )
    })
}
