//! The o2cb cluster stack, as OCFS2 knows it.
//!
//! So far this crate holds the stack's configuration, as pure code:
//! - [`conf`]: `/etc/ocfs2/cluster.conf`, read and written in the stanza format the
//!   real `o2cb` tool writes, and the edits its verbs make (`add-cluster`,
//!   `add-node`, ...);
//! - [`settings`]: `/etc/default/o2cb`, the service's variables and what they mean
//!   (heartbeat threshold in 2-second beats, network idle timeout, keepalive and
//!   reconnect delays).
//!
//! Membership (network and disk heartbeat), quorum and fencing, and the distributed
//! lock manager come next, as sans-IO state machines beside these.

pub mod conf;
pub mod settings;
