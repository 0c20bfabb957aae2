//! The v09 superblock: the last 4 KiB block of the device, all fields big-endian.
//!
//! ```text
//! offset size field
//!      0    8 effective_size        last agreed size of the replicated device, sectors
//!      8    8 current_uuid          current data generation UUID
//!     16    8 members               node mask (meaningful only with a flag DRBD sets)
//!     24   24 reserved              three u64, zero
//!     48    8 device_uuid           random, set once by drbdadm create-md
//!     56    4 flags                 MDF_* (consistent, primary, AL clean, ...)
//!     60    4 magic                 0x8374026d for v09
//!     64    4 md_size_sect          bitmap + AL + superblock, sectors
//!     68    4 al_offset             signed, sectors from the superblock (negative)
//!     72    4 al_nr_extents         AL size in extents (drbdmeta writes 257)
//!     76    4 bm_offset             signed, sectors from the superblock (negative)
//!     80    4 bm_bytes_per_bit      4096
//!     84    4 la_peer_max_bio_size  last peer max BIO size, bytes
//!     88    4 bm_max_peers          number of interleaved bitmaps, 1..=31
//!     92    4 node_id               signed, -1 until the kernel attaches it
//!     96    4 al_stripes
//!    100    4 al_stripe_size_4k
//!    104    8 reserved              two u32, zero
//!    112 1024 peers[32]             32 bytes each, indexed by node id:
//!               +0  8 bitmap_uuid   +8  8 bitmap_dagtag
//!               +16 4 flags (MDF_PEER_*)  +20 4 bitmap_index (signed, -1 = none)
//!               +24 8 reserved
//!   1136  256 history_uuids[32]
//!   1392 2704 zero padding to 4096
//! ```

use thiserror::Error;

use crate::layout::{Layout, BM_BLOCK_SIZE, MAX_PEERS};

/// The v09 superblock magic (DRBD_MAGIC + 6).
pub const MAGIC_V09: u32 = 0x8374_026d;
/// The v08 superblock magic, recognized so create-md can say what it found.
pub const MAGIC_V08: u32 = 0x8374_026b;
/// "Unclean" v08.4 magic.
pub const MAGIC_V84_UNCLEAN: u32 = 0x8374_026c;
/// Slots for peers and history UUIDs.
pub const PEER_SLOTS: usize = 32;
pub const HISTORY_UUIDS: usize = 32;
/// The current UUID of meta-data nobody has attached yet.
pub const UUID_JUST_CREATED: u64 = 4;
/// The `al_nr_extents` value drbdmeta writes ("arbitrary", in its own words).
pub const DEFAULT_AL_EXTENTS: u32 = 257;
/// Encoded size of the fields (the rest of the 4 KiB block is padding).
pub const ENCODED_LEN: usize = 1392;
/// The size of the superblock block on disk.
pub const BLOCK_LEN: usize = 4096;

/// Device flags (`flags`).
pub mod mdf {
    pub const CONSISTENT: u32 = 1 << 0;
    pub const PRIMARY_IND: u32 = 1 << 1;
    pub const CONNECTED_IND: u32 = 1 << 2;
    pub const FULL_SYNC: u32 = 1 << 3;
    pub const WAS_UP_TO_DATE: u32 = 1 << 4;
    pub const PEER_OUT_DATED: u32 = 1 << 5;
    pub const CRASHED_PRIMARY: u32 = 1 << 6;
    pub const AL_CLEAN: u32 = 1 << 7;
    pub const AL_DISABLED: u32 = 1 << 8;
    pub const PRIMARY_LOST_QUORUM: u32 = 1 << 9;
    pub const HAVE_QUORUM: u32 = 1 << 10;
}

/// Per-peer flags (`peers[i].flags`).
pub mod mdf_peer {
    pub const CONNECTED: u32 = 1 << 0;
    pub const OUTDATED: u32 = 1 << 1;
    pub const FENCING: u32 = 1 << 2;
    pub const FULL_SYNC: u32 = 1 << 3;
    pub const DEVICE_SEEN: u32 = 1 << 4;
    pub const NODE_EXISTS: u32 = 1 << 16;
}

/// What the superblock knows about one peer (indexed by the peer's node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSlot {
    pub bitmap_uuid: u64,
    pub bitmap_dagtag: u64,
    pub flags: u32,
    /// Which of the interleaved bitmaps tracks this peer; -1 = none.
    pub bitmap_index: i32,
}

impl Default for PeerSlot {
    fn default() -> Self {
        PeerSlot {
            bitmap_uuid: 0,
            bitmap_dagtag: 0,
            flags: 0,
            bitmap_index: -1,
        }
    }
}

/// A decoded v09 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Last agreed size of the replicated device, in sectors (`la-size-sect`).
    pub effective_size: u64,
    pub current_uuid: u64,
    pub members: u64,
    pub device_uuid: u64,
    pub flags: u32,
    pub magic: u32,
    pub md_size_sect: u32,
    pub al_offset: i32,
    pub al_nr_extents: u32,
    pub bm_offset: i32,
    pub bm_bytes_per_bit: u32,
    pub la_peer_max_bio_size: u32,
    pub max_peers: u32,
    pub node_id: i32,
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
    pub peers: [PeerSlot; PEER_SLOTS],
    pub history_uuids: [u64; HISTORY_UUIDS],
}

/// A superblock that cannot be used, naming the field and its value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("superblock: {len} bytes given, {BLOCK_LEN} needed")]
    TooShort { len: usize },
    #[error("superblock field magic: 0x{found:08x} is not the v09 magic 0x{MAGIC_V09:08x}")]
    Magic { found: u32 },
    #[error("superblock field {field} (offset {offset}): value {value} {reason}")]
    Field {
        field: &'static str,
        offset: usize,
        value: i64,
        reason: &'static str,
    },
}

/// A superblock that decodes but does not match the layout of the device it is on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LayoutMismatch {
    #[error("v09 al_offset: expected {expected}, found {found}")]
    AlOffset { expected: i32, found: i32 },
    #[error("strange bm_offset {found} (expected: {expected})")]
    BmOffset { expected: i32, found: i32 },
    #[error("{0}")]
    Layout(#[from] crate::layout::LayoutError),
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

const PEERS_AT: usize = 112;
const PEER_LEN: usize = 32;
const HISTORY_AT: usize = PEERS_AT + PEER_SLOTS * PEER_LEN;

impl Superblock {
    /// The superblock drbdmeta's create-md writes for `layout`: current UUID
    /// "just created", AL clean, node id and every bitmap index -1.
    pub fn new_for(layout: &Layout) -> Superblock {
        Superblock {
            effective_size: 0,
            current_uuid: UUID_JUST_CREATED,
            members: 0,
            device_uuid: 0,
            flags: mdf::AL_CLEAN,
            magic: MAGIC_V09,
            md_size_sect: layout.md_size_sect,
            al_offset: layout.al_offset_sect,
            al_nr_extents: DEFAULT_AL_EXTENTS,
            bm_offset: layout.bm_offset_sect,
            bm_bytes_per_bit: BM_BLOCK_SIZE,
            la_peer_max_bio_size: 0,
            max_peers: layout.max_peers,
            node_id: -1,
            al_stripes: layout.al_stripes,
            al_stripe_size_4k: layout.al_stripe_size_4k,
            peers: [PeerSlot::default(); PEER_SLOTS],
            history_uuids: [0; HISTORY_UUIDS],
        }
    }

    /// Decodes and checks a superblock block (at least 4096 bytes). Never panics.
    ///
    /// Checks what drbdmeta checks before it trusts a superblock: the magic, the
    /// peer count, node ids and bitmap indexes in range, and a bitmap granularity
    /// and AL striping this code can compute with. The offsets are checked against
    /// the device by [`Superblock::check_layout`].
    pub fn decode(block: &[u8]) -> Result<Superblock, DecodeError> {
        if block.len() < BLOCK_LEN {
            return Err(DecodeError::TooShort { len: block.len() });
        }
        let sb = Superblock::decode_unchecked(block);
        if sb.magic != MAGIC_V09 {
            return Err(DecodeError::Magic { found: sb.magic });
        }
        let field = |field, offset, value: i64, reason| DecodeError::Field {
            field,
            offset,
            value,
            reason,
        };
        if !(1..=MAX_PEERS).contains(&sb.max_peers) {
            return Err(field(
                "bm_max_peers",
                88,
                sb.max_peers.into(),
                "is not in 1..=31",
            ));
        }
        if !(-1..=31).contains(&sb.node_id) {
            return Err(field("node_id", 92, sb.node_id.into(), "is not in -1..=31"));
        }
        for (n, peer) in sb.peers.iter().enumerate().take(sb.max_peers as usize) {
            if !(-1..=31).contains(&peer.bitmap_index) {
                return Err(field(
                    "peers[].bitmap_index",
                    PEERS_AT + n * PEER_LEN + 20,
                    peer.bitmap_index.into(),
                    "is not in -1..=31",
                ));
            }
        }
        if sb.bm_bytes_per_bit != BM_BLOCK_SIZE {
            return Err(field(
                "bm_bytes_per_bit",
                80,
                sb.bm_bytes_per_bit.into(),
                "is not 4096",
            ));
        }
        if sb.al_stripes == 0 {
            return Err(field("al_stripes", 96, 0, "is zero"));
        }
        if sb.al_stripe_size_4k == 0 {
            return Err(field("al_stripe_size_4k", 100, 0, "is zero"));
        }
        let al_sect = u64::from(sb.al_stripes) * u64::from(sb.al_stripe_size_4k) * 8;
        if al_sect > i32::MAX as u64 {
            return Err(field(
                "al_stripe_size_4k",
                100,
                sb.al_stripe_size_4k.into(),
                "makes the AL too large",
            ));
        }
        Ok(sb)
    }

    /// Decodes every field without checking any. `block` must hold 1392 bytes.
    fn decode_unchecked(b: &[u8]) -> Superblock {
        let mut peers = [PeerSlot::default(); PEER_SLOTS];
        for (i, p) in peers.iter_mut().enumerate() {
            let at = PEERS_AT + i * PEER_LEN;
            *p = PeerSlot {
                bitmap_uuid: be_u64(b, at),
                bitmap_dagtag: be_u64(b, at + 8),
                flags: be_u32(b, at + 16),
                bitmap_index: be_u32(b, at + 20) as i32,
            };
        }
        let mut history_uuids = [0u64; HISTORY_UUIDS];
        for (i, h) in history_uuids.iter_mut().enumerate() {
            *h = be_u64(b, HISTORY_AT + i * 8);
        }
        Superblock {
            effective_size: be_u64(b, 0),
            current_uuid: be_u64(b, 8),
            members: be_u64(b, 16),
            device_uuid: be_u64(b, 48),
            flags: be_u32(b, 56),
            magic: be_u32(b, 60),
            md_size_sect: be_u32(b, 64),
            al_offset: be_u32(b, 68) as i32,
            al_nr_extents: be_u32(b, 72),
            bm_offset: be_u32(b, 76) as i32,
            bm_bytes_per_bit: be_u32(b, 80),
            la_peer_max_bio_size: be_u32(b, 84),
            max_peers: be_u32(b, 88),
            node_id: be_u32(b, 92) as i32,
            al_stripes: be_u32(b, 96),
            al_stripe_size_4k: be_u32(b, 100),
            peers,
            history_uuids,
        }
    }

    /// Encodes into a whole 4 KiB block (reserved fields and padding zero).
    pub fn encode(&self) -> [u8; BLOCK_LEN] {
        let mut b = [0u8; BLOCK_LEN];
        put_u64(&mut b, 0, self.effective_size);
        put_u64(&mut b, 8, self.current_uuid);
        put_u64(&mut b, 16, self.members);
        put_u64(&mut b, 48, self.device_uuid);
        put_u32(&mut b, 56, self.flags);
        put_u32(&mut b, 60, self.magic);
        put_u32(&mut b, 64, self.md_size_sect);
        put_u32(&mut b, 68, self.al_offset as u32);
        put_u32(&mut b, 72, self.al_nr_extents);
        put_u32(&mut b, 76, self.bm_offset as u32);
        put_u32(&mut b, 80, self.bm_bytes_per_bit);
        put_u32(&mut b, 84, self.la_peer_max_bio_size);
        put_u32(&mut b, 88, self.max_peers);
        put_u32(&mut b, 92, self.node_id as u32);
        put_u32(&mut b, 96, self.al_stripes);
        put_u32(&mut b, 100, self.al_stripe_size_4k);
        for (i, p) in self.peers.iter().enumerate() {
            let at = PEERS_AT + i * PEER_LEN;
            put_u64(&mut b, at, p.bitmap_uuid);
            put_u64(&mut b, at + 8, p.bitmap_dagtag);
            put_u32(&mut b, at + 16, p.flags);
            put_u32(&mut b, at + 20, p.bitmap_index as u32);
        }
        for (i, h) in self.history_uuids.iter().enumerate() {
            put_u64(&mut b, HISTORY_AT + i * 8, *h);
        }
        b
    }

    /// The layout this superblock implies on a device of `device_bytes` bytes.
    pub fn layout(&self, device_bytes: u64) -> Result<Layout, crate::layout::LayoutError> {
        Layout::internal(
            device_bytes,
            self.max_peers,
            self.al_stripes,
            self.al_stripe_size_4k,
        )
    }

    /// Checks the stored offsets against the layout for a device of
    /// `device_bytes`, as drbdmeta does before it trusts internal meta-data.
    /// A differing `md_size_sect` is tolerated (drbdmeta only warns about it for
    /// v09); it is returned as `Ok(Some(expected))`.
    pub fn check_layout(&self, device_bytes: u64) -> Result<(Layout, Option<u32>), LayoutMismatch> {
        let layout = self.layout(device_bytes)?;
        if self.al_offset != layout.al_offset_sect {
            return Err(LayoutMismatch::AlOffset {
                expected: layout.al_offset_sect,
                found: self.al_offset,
            });
        }
        if self.bm_offset != layout.bm_offset_sect {
            return Err(LayoutMismatch::BmOffset {
                expected: layout.bm_offset_sect,
                found: self.bm_offset,
            });
        }
        let strange = (self.md_size_sect != layout.md_size_sect).then_some(layout.md_size_sect);
        Ok((layout, strange))
    }

    /// Sectors of data the bitmap describes: the last agreed size, clipped to what
    /// the device can hold in front of the meta-data (as drbdmeta clips it).
    pub fn clipped_effective_size(&self, layout: &Layout) -> u64 {
        self.effective_size.min(layout.max_usable_sectors)
    }
}

/// Cheap probe: does this block carry a v09 (or older DRBD) magic at the v09
/// position? Used to warn before overwriting.
pub fn magic_of(block: &[u8]) -> Option<u32> {
    (block.len() >= 64).then(|| be_u32(block, 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first 112 bytes and one peer slot of the superblock the real drbdmeta
    /// 9.22 wrote with `create-md 1` on a 1 GiB loop device (read with `xxd`).
    #[test]
    fn encodes_like_drbdmeta() {
        let layout = Layout::internal_default(1 << 30, 1).unwrap();
        let b = Superblock::new_for(&layout).encode();
        let expect_head: [(usize, &[u8]); 6] = [
            (8, &[0, 0, 0, 0, 0, 0, 0, 4]),
            (56, &[0, 0, 0, 0x80, 0x83, 0x74, 0x02, 0x6d]),
            (
                64,
                &[
                    0, 0, 0, 0x88, 0xff, 0xff, 0xff, 0xc0, 0, 0, 1, 1, 0xff, 0xff, 0xff, 0x80,
                ],
            ),
            (
                80,
                &[
                    0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
                ],
            ),
            (96, &[0, 0, 0, 1, 0, 0, 0, 8]),
            (128, &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        ];
        for (at, bytes) in expect_head {
            assert_eq!(&b[at..at + bytes.len()], bytes, "at offset {at}");
        }
        assert!(b[HISTORY_AT..].iter().all(|&x| x == 0));
    }

    #[test]
    fn decode_names_the_field() {
        let layout = Layout::internal_default(1 << 30, 1).unwrap();
        let mut sb = Superblock::new_for(&layout);
        sb.max_peers = 40;
        let err = Superblock::decode(&sb.encode()).unwrap_err();
        assert!(err.to_string().contains("bm_max_peers"), "{err}");
        assert!(matches!(
            Superblock::decode(&[0u8; 4096]),
            Err(DecodeError::Magic { found: 0 })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; 10]),
            Err(DecodeError::TooShort { len: 10 })
        ));
    }

    #[test]
    fn layout_check() {
        let layout = Layout::internal_default(1 << 30, 2).unwrap();
        let sb = Superblock::new_for(&layout);
        assert_eq!(sb.check_layout(1 << 30).unwrap().0, layout);
        assert!(matches!(
            sb.check_layout(2 << 30),
            Err(LayoutMismatch::BmOffset { .. })
        ));
    }

    fn arb_superblock() -> impl Strategy<Value = Superblock> {
        let peer =
            (any::<u64>(), any::<u64>(), any::<u32>(), -1i32..=31).prop_map(|(u, d, f, i)| {
                PeerSlot {
                    bitmap_uuid: u,
                    bitmap_dagtag: d,
                    flags: f,
                    bitmap_index: i,
                }
            });
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
            ),
            (
                any::<u32>(),
                any::<i32>(),
                any::<u32>(),
                any::<i32>(),
                any::<u32>(),
            ),
            (1u32..=31, -1i32..=31, 1u32..=4, 1u32..=64),
            proptest::array::uniform32(peer),
            proptest::array::uniform32(any::<u64>()),
        )
            .prop_map(|(a, b, c, peers, history_uuids)| Superblock {
                effective_size: a.0,
                current_uuid: a.1,
                members: a.2,
                device_uuid: a.3,
                flags: a.4,
                magic: MAGIC_V09,
                md_size_sect: b.0,
                al_offset: b.1,
                al_nr_extents: b.2,
                bm_offset: b.3,
                bm_bytes_per_bit: BM_BLOCK_SIZE,
                la_peer_max_bio_size: b.4,
                max_peers: c.0,
                node_id: c.1,
                al_stripes: c.2,
                al_stripe_size_4k: c.3,
                peers,
                history_uuids,
            })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Superblock::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_with_magic(mut bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            bytes[60..64].copy_from_slice(&MAGIC_V09.to_be_bytes());
            if let Ok(sb) = Superblock::decode(&bytes) {
                let _ = sb.check_layout(1 << 30);
                // Re-encoding keeps every field (reserved bytes and padding become zero).
                prop_assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
            }
        }

        #[test]
        fn round_trip(sb in arb_superblock()) {
            prop_assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        }
    }
}
