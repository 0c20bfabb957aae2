//! `drbd-meta`: DRBD 9 meta-data in the v09 internal ("flexible") layout, the
//! format the real `drbdmeta` and the DRBD kernel driver read and write.
//!
//! Per replicated volume, DRBD keeps at the end of the backing disk:
//!
//! - a **superblock** (last 4 KiB): generation UUIDs (current, per-peer bitmap
//!   UUIDs, history), flags, the agreed size, the sizes and offsets of the other
//!   two areas ([`superblock`]);
//! - an **activity log**: a ring of checksummed 4 KiB transactions naming the
//!   4 MiB extents a Primary may be writing, replayed into the bitmap after a crash
//!   ([`activity_log`]);
//! - a **bitmap**: one bit per 4 KiB per peer, set where the peer may differ,
//!   interleaved over the peers in 32-bit little-endian words ([`bitmap`]).
//!
//! Their sizes follow from the device size and `max-peers` alone ([`layout`]), by
//! the same rules as drbdmeta. [`detect`] recognizes filesystems create-md should
//! not overwrite, [`text`] prints what drbdmeta prints (dump-md, get-gi,
//! show-gi), and [`ops`] strings it together over a small [`ops::MetaDevice`]
//! trait; opening devices, asking questions and printing are the caller's.
//!
//! Decoders take byte slices and return errors that name the field; no input
//! makes them panic.

pub mod activity_log;
pub mod bitmap;
pub mod detect;
pub mod layout;
pub mod ops;
pub mod superblock;
pub mod text;

pub use bitmap::Bitmap;
pub use layout::{Layout, LayoutError};
pub use ops::MetaDevice;
pub use superblock::{PeerSlot, Superblock};
