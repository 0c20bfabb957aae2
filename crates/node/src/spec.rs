//! What the daemon needs to know about a resource: resolved from the
//! configuration by the command-line tool (which parses `/etc/drbd.d`), and sent
//! with `up`. The daemon never reads the configuration files itself.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub name: String,
    /// `/dev/drbdN`.
    pub device: String,
    pub minor: u32,
    /// The backing disk, with internal meta-data at its end.
    pub disk: String,
    pub node_id: u8,
    /// This host's name (for messages).
    pub host: String,
    /// `IP:PORT` this node listens on.
    pub address: String,
    pub peers: Vec<PeerSpec>,
    /// "A", "B" or "C".
    pub protocol: String,
    pub allow_two_primaries: bool,
    /// Most bytes per second a resync or online verify reads (from
    /// `resync-rate` or `c-max-rate`); `None`: no limit.
    #[serde(default)]
    pub resync_rate: Option<u64>,
    /// `on-io-error`: true for `detach` (DRBD's default), false for
    /// `pass_on` and `call-local-io-error`.
    #[serde(default = "detach_on_io_error")]
    pub on_io_error_detach: bool,
}

fn detach_on_io_error() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    pub node_id: u8,
    /// The peer's host name, as `drbdadm status` shows it.
    pub name: String,
    /// `IP:PORT`.
    pub address: String,
}
