//! `ocfs2`: the OCFS2 on-disk format, read and written the way the kernel and
//! ocfs2-tools do.
//!
//! A pure core. Each module is one family of on-disk structures with typed
//! `decode`/`encode` functions over byte slices: decoding never panics and
//! every error names the block number, structure and field at fault
//! ([`DecodeError`]). Only two modules touch a device, and only through small
//! traits: [`volume`] reads through [`BlockSource`] and [`mkfs`] writes through
//! [`mkfs::BlockSink`]; both are implemented for files and for memory.
//!
//! Layout of the crate:
//! - structures: [`superblock`], [`dinode`] (with its `id1`/`id2` unions: local
//!   alloc, truncate log, inline data, fast symlinks), [`extent`], [`alloc`]
//!   (chain lists and group descriptors), [`dir`] (entries, trailers, indexed
//!   directories), [`slot_map`], [`heartbeat`], [`xattr`], [`refcount`],
//!   [`quota`], and [`jbd2`] (the journal, big-endian);
//! - [`blockcheck`]: metaecc (CRC32 + Hamming code) compute, verify, correct;
//! - [`volume`]: the read-only view used by `tandem ocfs2` and the tests;
//! - [`mkfs`]: lays out a new volume exactly as `mkfs.ocfs2` 1.8.7 does.
//!
//! The byte-by-byte description of what we write is in `docs/FORMAT.md`.

pub mod alloc;
pub mod blockcheck;
pub mod codec;
pub mod device;
pub mod dinode;
pub mod dir;
pub mod error;
pub mod extent;
pub mod heartbeat;
pub mod jbd2;
pub mod mkfs;
pub mod quota;
pub mod refcount;
pub mod slot_map;
pub mod superblock;
pub mod volume;
pub mod xattr;

pub use error::{DecodeError, Error, Result};
pub use volume::{BlockSource, Volume};

/// Names of the system files, in system-directory order: global ones first,
/// then the per-slot ones (formatted with the slot as `%04d`).
pub const SYSTEM_FILES: &[(&str, bool)] = &[
    ("bad_blocks", true),
    ("global_inode_alloc", true),
    ("slot_map", true),
    ("heartbeat", true),
    ("global_bitmap", true),
    ("aquota.user", true),
    ("aquota.group", true),
    ("orphan_dir", false),
    ("extent_alloc", false),
    ("inode_alloc", false),
    ("journal", false),
    ("local_alloc", false),
    ("truncate_log", false),
    ("aquota.user", false),
    ("aquota.group", false),
];
