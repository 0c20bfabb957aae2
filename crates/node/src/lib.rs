//! The node daemon: "the kernel" of tandem on one machine.
//!
//! One daemon per machine (per lab node) hosts the resources brought up with
//! `drbdadm up`. For each resource it runs:
//! - the replication engine ([`replication::Resource`]) behind one lock, run by
//!   whichever thread has an event for it (device I/O, disk completions, peer
//!   messages, connections, administration, the 100 ms tick);
//! - a small pool of disk threads doing the engine's reads, writes and flushes on
//!   the backing device, and the meta-data writes (DRBD's v09 layout, through
//!   `drbd-meta`);
//! - the transport: one TCP connection per peer (the lower node id dials, the
//!   higher one listens), a preamble naming the resource and node id, then the
//!   engine's messages; a reader and a writer thread per connection;
//! - the device: the resource as a FUSE-served file behind a loop device with
//!   4 KiB sectors and direct I/O, and `/dev/drbdN` naming that loop device. The
//!   file's gate refuses I/O with `EMEDIUMTYPE` while the resource is Secondary;
//!   optionally the same device exported over NBD.
//!
//! Once registered, it also runs the o2cb cluster stack (`cluster_host`):
//! membership over TCP and a disk heartbeat, and the lock manager.
//!
//! The command-line tools talk to the daemon over a Unix socket
//! (`/run/tandem/tandemd.sock`, root only) with one JSON request and one JSON
//! response per connection ([`control`]); a lock holder keeps its connection
//! open for as long as it holds the lock.

mod cluster_host;
pub mod cluster_spec;
pub mod control;
pub mod daemon;
mod device;
mod disk_queue;
mod host;
mod meta_store;
pub mod spec;
pub mod status;
mod transport;
