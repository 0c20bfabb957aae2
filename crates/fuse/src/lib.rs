//! FUSE frontends of tandem: the block-device frontend and the read-only
//! OCFS2 filesystem ([`VolumeFs`]).
//!
//! The block-device frontend is one
//! [`BlockDevice`](blockdev::BlockDevice) served as a single regular file in a
//! FUSE mount, a loop device attached to that file (that loop device is what
//! `/dev/drbdN` names), and the [`OpenGate`] that makes the device refuse use
//! while its resource is Secondary.
//!
//! ```text
//!  mkfs.xfs / mount ── /dev/loopN (direct I/O, 4 KiB sectors)
//!                         │ read_iter/write_iter, fsync, fallocate
//!                 FUSE file <mountpoint>/<name>   (FOPEN_DIRECT_IO: no page cache here)
//!                         │ /dev/fuse, ≥ 2 worker threads, PR_SET_IO_FLUSHER
//!                 DeviceFs ── OpenGate ── BlockDevice
//! ```
//!
//! Shutdown never leaves the kernel waiting on us: [`LoopDevice::detach`], then
//! [`DeviceMount::shutdown`] unmounts (lazily if still busy) and, if the worker
//! threads have not ended within a grace period, aborts the FUSE connection
//! through `/sys/fs/fuse/connections/N/abort`, which fails every pending request.

mod fs;
mod gate;
mod loopdev;
mod mount;
mod volume_fs;

pub use fs::DeviceFs;
pub use gate::OpenGate;
pub use loopdev::{backing_device, detach_number, LoopDevice, LoopOptions};
pub use mount::{fuse_connection_of, DeviceMount, ServeOptions, ShutdownReport};
pub use volume_fs::{mount_read_only, MountRefusal, VolumeFs};
