//! The o2cb cluster stack, as OCFS2 knows it, as pure code.
//!
//! - [`conf`]: `/etc/ocfs2/cluster.conf`, read and written in the stanza format the
//!   real `o2cb` tool writes, and the edits its verbs make (`add-cluster`,
//!   `add-node`, ...);
//! - [`settings`]: `/etc/default/o2cb`, the service's variables and what they mean
//!   (heartbeat threshold in 2-second beats, network idle timeout, keepalive and
//!   reconnect delays);
//! - [`membership`]: a sans-IO state machine per node: network handshake and
//!   keepalives, disk heartbeat observations, joined/dead nodes, the o2quo quorum
//!   rule and self-fencing, and a reliable message channel per peer;
//! - [`dlm`]: the distributed lock manager, a sans-IO state machine per node and lock
//!   domain (NL/PR/EX, AST/BAST, 64-byte LVBs, mastery, rebuild on view changes,
//!   recovery gated by the layer above);
//! - [`message`]: the wire codec of both.
//!
//! No sockets, threads or clocks here: the daemon (and the simulation in
//! `tests/simulation.rs`) feed inputs with the time and carry out the outputs.
//! How the pieces work together: `docs/cluster.md`.

pub mod conf;
pub mod dlm;
pub mod membership;
pub mod message;
pub mod settings;
