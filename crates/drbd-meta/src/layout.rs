//! Where internal ("flexible") meta-data sits on the backing device, and how big it is.
//!
//! Internal meta-data occupies the end of the backing device:
//!
//! ```text
//!  0                                  bm_offset      al_offset     md_offset   end
//!  |  data (usable by the replicated  |   bitmap     | activity log | super-  |
//!  |  device: max_usable_sectors)     |              | (AL)         | block   |
//!                                                                   |<-4 KiB->|
//! ```
//!
//! - The superblock is the last whole 4 KiB block of the device
//!   (`md_offset = (size - 4096)` rounded down to 4 KiB).
//! - The activity log is `al_stripes * al_stripe_size_4k` blocks of 4 KiB right
//!   before it (32 KiB by default: 1 stripe of 8 blocks).
//! - The bitmap sits before the activity log. It is sized for the whole device
//!   (not just the usable part): one bit per 4 KiB, rounded up to 64 bits, times
//!   `max_peers` (the peers' bitmaps are interleaved), rounded up to 4 KiB.
//!
//! The superblock stores `al_offset` and `bm_offset` in 512-byte sectors relative to
//! `md_offset` (so both are negative for internal meta-data) and `md_size_sect`, the
//! whole area (bitmap + AL + superblock) in sectors. These rules are the ones
//! drbdmeta applies; `tests` in this module pin them to numbers read from the real
//! tool.

use thiserror::Error;

/// Bytes per bitmap bit (the only granularity DRBD 9 uses).
pub const BM_BLOCK_SIZE: u32 = 4096;
/// Size of the superblock area, and the unit of all meta-data I/O.
pub const BLOCK_SIZE: u64 = 4096;
/// The superblock occupies 8 sectors: the activity log and bitmap offsets count
/// from its start.
pub const SUPERBLOCK_SECTORS: u64 = 8;
/// Default activity-log striping: one stripe of 32 KiB.
pub const DEFAULT_AL_STRIPES: u32 = 1;
pub const DEFAULT_AL_STRIPE_SIZE_4K: u32 = 8;
/// The largest number of peers a v09 superblock can describe.
pub const MAX_PEERS: u32 = 31;
/// drbdmeta reads the first 68 KiB of a device to look for existing data, and
/// refuses devices smaller than that.
pub const MIN_DEVICE_BYTES: u64 = 68 * 1024;
/// drbdmeta's limit on the device size the bitmap may describe: 1 PiB (in sectors).
pub const MAX_DEVICE_SECTORS: u64 = 1 << 41;
/// drbdmeta's limit on the bitmap area per peer (64-bit builds): 32 GiB.
const MAX_BITMAP_BYTES_PER_PEER: u64 = 1 << 35;
/// Bound on the activity-log size accepted here (drbdmeta's option parser caps
/// the AL at far less; this only keeps sector arithmetic inside `i32`).
const MAX_AL_BLOCKS: u64 = 1 << 20;

/// Why no layout exists for a device.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("device is only {bytes} bytes; meta-data needs at least {MIN_DEVICE_BYTES}")]
    DeviceTooSmall { bytes: u64 },
    #[error("device of {sectors} sectors is larger than the 1 PiB a bitmap may describe")]
    DeviceTooLarge { sectors: u64 },
    #[error("max-peers {0} is not in 1..={MAX_PEERS}")]
    MaxPeers(u32),
    #[error("activity-log striping {stripes} x {stripe_size_4k} x 4 KiB is not supported")]
    AlStripes { stripes: u32, stripe_size_4k: u32 },
    #[error("Bitmap for that device got too large.")]
    BitmapTooLarge,
    #[error("meta-data of {md_bytes} bytes does not fit on a device of {device_bytes} bytes")]
    DoesNotFit { md_bytes: u64, device_bytes: u64 },
}

/// The computed placement of internal meta-data on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Size of the backing device in bytes.
    pub device_bytes: u64,
    pub max_peers: u32,
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
    /// Byte offset of the superblock.
    pub md_offset: u64,
    /// Byte offset of the activity log.
    pub al_offset: u64,
    /// Byte offset of the bitmap.
    pub bm_offset: u64,
    /// The whole meta-data area in sectors (as stored in the superblock).
    pub md_size_sect: u32,
    /// The AL offset relative to the superblock, in sectors (negative).
    pub al_offset_sect: i32,
    /// The bitmap offset relative to the superblock, in sectors (negative).
    pub bm_offset_sect: i32,
    /// Bytes reserved for the bitmap (for the whole device, all peers).
    pub bm_bytes: u64,
    /// Sectors left for data in front of the meta-data.
    pub max_usable_sectors: u64,
}

/// Bytes of bitmap needed for `sectors` of data and `max_peers` peers: one bit per
/// 4 KiB rounded up to 64 bits per peer, times the peers, rounded up to 4 KiB.
pub fn bitmap_bytes(sectors: u64, max_peers: u32) -> Result<u64, LayoutError> {
    if sectors > MAX_DEVICE_SECTORS {
        return Err(LayoutError::DeviceTooLarge { sectors });
    }
    let sectors_per_bit = u64::from(BM_BLOCK_SIZE >> 9);
    let bits = sectors.div_ceil(sectors_per_bit).next_multiple_of(64);
    Ok((bits / 8 * u64::from(max_peers)).next_multiple_of(BLOCK_SIZE))
}

/// Byte offset of the superblock of internal meta-data: the last whole 4 KiB block.
pub fn superblock_offset(device_bytes: u64) -> u64 {
    device_bytes.saturating_sub(BLOCK_SIZE) & !(BLOCK_SIZE - 1)
}

impl Layout {
    /// The layout drbdmeta computes for internal meta-data on a device of
    /// `device_bytes` bytes.
    pub fn internal(
        device_bytes: u64,
        max_peers: u32,
        al_stripes: u32,
        al_stripe_size_4k: u32,
    ) -> Result<Layout, LayoutError> {
        if device_bytes < MIN_DEVICE_BYTES {
            return Err(LayoutError::DeviceTooSmall {
                bytes: device_bytes,
            });
        }
        if !(1..=MAX_PEERS).contains(&max_peers) {
            return Err(LayoutError::MaxPeers(max_peers));
        }
        let al_blocks = u64::from(al_stripes) * u64::from(al_stripe_size_4k);
        if al_blocks == 0 || al_blocks > MAX_AL_BLOCKS {
            return Err(LayoutError::AlStripes {
                stripes: al_stripes,
                stripe_size_4k: al_stripe_size_4k,
            });
        }
        let al_size_sect = al_blocks * 8;
        let bm_bytes = bitmap_bytes(device_bytes >> 9, max_peers)?;
        let bm_sect = (bm_bytes >> 9).next_multiple_of(8);
        if bm_sect > (MAX_BITMAP_BYTES_PER_PEER >> 9) * u64::from(max_peers) {
            return Err(LayoutError::BitmapTooLarge);
        }
        let md_size_sect = bm_sect + SUPERBLOCK_SECTORS + al_size_sect;
        let md_offset = superblock_offset(device_bytes);
        let below_superblock = (md_size_sect - SUPERBLOCK_SECTORS) * 512;
        if below_superblock > md_offset {
            return Err(LayoutError::DoesNotFit {
                md_bytes: md_size_sect * 512,
                device_bytes,
            });
        }
        // Both fit in i32/u32: the device is at most 2^41 sectors, so its bitmap is
        // at most 2^29 bytes per peer (2^20 sectors), times 31 peers.
        let md_size_sect_u32 =
            u32::try_from(md_size_sect).map_err(|_| LayoutError::BitmapTooLarge)?;
        let al_offset_sect =
            -i32::try_from(al_size_sect).map_err(|_| LayoutError::BitmapTooLarge)?;
        let bm_offset_sect = -i32::try_from(md_size_sect - SUPERBLOCK_SECTORS)
            .map_err(|_| LayoutError::BitmapTooLarge)?;
        let al_offset = md_offset - al_size_sect * 512;
        let bm_offset = md_offset - below_superblock;
        Ok(Layout {
            device_bytes,
            max_peers,
            al_stripes,
            al_stripe_size_4k,
            md_offset,
            al_offset,
            bm_offset,
            md_size_sect: md_size_sect_u32,
            al_offset_sect,
            bm_offset_sect,
            bm_bytes,
            max_usable_sectors: bm_offset >> 9,
        })
    }

    /// The layout with the default activity log (1 stripe of 32 KiB).
    pub fn internal_default(device_bytes: u64, max_peers: u32) -> Result<Layout, LayoutError> {
        Layout::internal(
            device_bytes,
            max_peers,
            DEFAULT_AL_STRIPES,
            DEFAULT_AL_STRIPE_SIZE_4K,
        )
    }

    /// Number of 4 KiB activity-log blocks (transactions in the ring).
    pub fn al_blocks(&self) -> u32 {
        self.al_stripes * self.al_stripe_size_4k
    }

    /// Bytes of the activity log.
    pub fn al_bytes(&self) -> u64 {
        u64::from(self.al_blocks()) * BLOCK_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers read from the real drbdmeta (drbd-utils 9.22.0): for each size, a
    /// sparse file of that size on a loop device, then
    /// `DRBD_DRIVER_VERSION_OVERRIDE=9.2.0 drbdmeta --force 0 v09 /dev/loopN internal
    /// create-md MAX_PEERS` and `... dump-md`; the `# md_size_sect`, `# md_offset`,
    /// `# al_offset`, `# bm_offset` comment lines, and the bitmap size printed by
    /// create-md (`initializing bitmap (N KB)`).
    /// Columns: device bytes, max-peers, md_size_sect, md_offset, al_offset,
    /// bm_offset, bitmap KiB.
    const FROM_DRBDMETA: &[(u64, u32, u32, u64, u64, u64, u64)] = &[
        (1073741824, 1, 136, 1073737728, 1073704960, 1073672192, 32),
        (1073741824, 2, 200, 1073737728, 1073704960, 1073639424, 64),
        (1073741824, 7, 520, 1073737728, 1073704960, 1073475584, 224),
        (
            1073741824, 31, 2056, 1073737728, 1073704960, 1072689152, 992,
        ),
        (104857600, 1, 80, 104853504, 104820736, 104816640, 4),
        (104857600, 2, 88, 104853504, 104820736, 104812544, 8),
        (104857600, 3, 96, 104853504, 104820736, 104808448, 12),
        (104857600, 31, 272, 104853504, 104820736, 104718336, 100),
        // 10 GiB + 12345 sectors: not a multiple of 4 KiB.
        (
            10743738880,
            1,
            720,
            10743734272,
            10743701504,
            10743369728,
            324,
        ),
        (
            10743738880,
            5,
            3280,
            10743734272,
            10743701504,
            10742059008,
            1604,
        ),
        (1048576, 1, 80, 1044480, 1011712, 1007616, 4),
        // 4 TiB (printed by create-md as "256 MB").
        (
            4398046511104,
            2,
            524360,
            4398046507008,
            4398046474240,
            4397778038784,
            262144,
        ),
    ];

    #[test]
    fn layout_matches_drbdmeta() {
        for &(bytes, peers, md_size, md_off, al_off, bm_off, bm_kib) in FROM_DRBDMETA {
            let l = Layout::internal_default(bytes, peers).unwrap();
            assert_eq!(
                (
                    l.md_size_sect,
                    l.md_offset,
                    l.al_offset,
                    l.bm_offset,
                    l.bm_bytes / 1024
                ),
                (md_size, md_off, al_off, bm_off, bm_kib),
                "device {bytes} bytes, max-peers {peers}"
            );
            assert_eq!(l.al_offset_sect, -64);
            assert_eq!(i64::from(l.bm_offset_sect), -(i64::from(md_size) - 8));
        }
    }

    #[test]
    fn rejects_what_drbdmeta_rejects() {
        assert_eq!(
            Layout::internal_default(4096, 1),
            Err(LayoutError::DeviceTooSmall { bytes: 4096 })
        );
        assert_eq!(
            Layout::internal_default(1 << 30, 0),
            Err(LayoutError::MaxPeers(0))
        );
        assert_eq!(
            Layout::internal_default(1 << 30, 32),
            Err(LayoutError::MaxPeers(32))
        );
        assert!(matches!(
            Layout::internal_default(1 << 51, 1),
            Err(LayoutError::DeviceTooLarge { .. })
        ));
    }
}
