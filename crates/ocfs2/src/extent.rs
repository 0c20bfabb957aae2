//! Extent lists, records and extent blocks: the b-tree that maps file clusters.
//!
//! An extent list (16-byte header: depth, capacity, records used) sits in a
//! dinode's `id2`, in an extent block (`EXBLK01`), in an indexed-directory root, a
//! refcount block, an xattr value root, or (flat, depth 0) in a discontiguous
//! group descriptor. Each 16-byte record maps `clusters` clusters starting at file
//! cluster `cpos` to the blocks starting at `blkno`; at depth 0 the 32-bit count
//! is split into a 16-bit cluster count, a reserved byte and a flags byte
//! (unwritten, refcounted). Interior records point at extent blocks.

use crate::blockcheck::BlockCheck;
use crate::codec::{put_bytes, put_le16, put_le32, put_le64, Decoder};
use crate::error::DecodeResult;

/// Signature of an extent block.
pub const EXTENT_BLOCK_SIGNATURE: &[u8; 8] = b"EXBLK01\0";
/// Extent flag: allocated but unwritten.
pub const EXT_UNWRITTEN: u8 = 0x01;
/// Extent flag: shared through a refcount tree.
pub const EXT_REFCOUNTED: u8 = 0x02;
/// Size of the list header.
pub const EXTENT_LIST_HEADER: usize = 16;
/// Size of one record.
pub const EXTENT_REC_SIZE: usize = 16;
/// Offset of the list in an extent block.
pub const EXTENT_BLOCK_LIST_OFFSET: usize = 0x30;
/// Offset of the check in an extent block.
pub const EXTENT_BLOCK_CHECK_OFFSET: usize = 8;

/// One extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtentRec {
    /// First file cluster covered.
    pub cpos: u32,
    /// Interior: clusters under the child. Leaf: low 16 bits are clusters,
    /// bits 24..32 the flags.
    pub clusters_raw: u32,
    /// First block.
    pub blkno: u64,
}

impl ExtentRec {
    /// A leaf record.
    pub fn leaf(cpos: u32, clusters: u16, flags: u8, blkno: u64) -> ExtentRec {
        ExtentRec {
            cpos,
            clusters_raw: u32::from(clusters) | (u32::from(flags) << 24),
            blkno,
        }
    }
    /// Clusters covered, read as a leaf record.
    pub fn leaf_clusters(&self) -> u32 {
        self.clusters_raw & 0xffff
    }
    /// Flags, read as a leaf record.
    pub fn flags(&self) -> u8 {
        (self.clusters_raw >> 24) as u8
    }
}

/// An extent list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtentList {
    /// 0 for a leaf.
    pub tree_depth: u16,
    /// Records that fit.
    pub count: u16,
    /// Records in use (these are decoded into `recs`).
    pub next_free_rec: u16,
    /// The used records.
    pub recs: Vec<ExtentRec>,
}

impl ExtentList {
    /// An empty leaf list with room for `count` records.
    pub fn empty(count: u16) -> ExtentList {
        ExtentList {
            tree_depth: 0,
            count,
            next_free_rec: 0,
            recs: Vec::new(),
        }
    }

    /// Records that fit in `space` bytes (header included).
    pub fn capacity(space: usize) -> u16 {
        (space.saturating_sub(EXTENT_LIST_HEADER) / EXTENT_REC_SIZE) as u16
    }

    /// Decodes the list at the start of `d`.
    pub fn decode(d: &Decoder<'_>) -> DecodeResult<ExtentList> {
        let tree_depth = d.le16(0, "l_tree_depth")?;
        let count = d.le16(2, "l_count")?;
        let next_free_rec = d.le16(4, "l_next_free_rec")?;
        if tree_depth > 8 {
            return Err(d.err(
                "l_tree_depth",
                format!("{tree_depth} is deeper than any real tree"),
            ));
        }
        let room = Self::capacity(d.buf().len());
        if count > room {
            return Err(d.err(
                "l_count",
                format!("{count} records do not fit in {} bytes", d.buf().len()),
            ));
        }
        if next_free_rec > count {
            return Err(d.err(
                "l_next_free_rec",
                format!("{next_free_rec} is more than l_count {count}"),
            ));
        }
        let mut recs = Vec::with_capacity(next_free_rec.into());
        for i in 0..usize::from(next_free_rec) {
            let o = EXTENT_LIST_HEADER + i * EXTENT_REC_SIZE;
            recs.push(ExtentRec {
                cpos: d.le32(o, "e_cpos")?,
                clusters_raw: d.le32(o + 4, "e_clusters")?,
                blkno: d.le64(o + 8, "e_blkno")?,
            });
        }
        Ok(ExtentList {
            tree_depth,
            count,
            next_free_rec,
            recs,
        })
    }

    /// Encodes into `b` (the space the list owns).
    pub fn encode(&self, b: &mut [u8]) {
        put_le16(b, 0, self.tree_depth);
        put_le16(b, 2, self.count);
        put_le16(b, 4, self.recs.len() as u16);
        for (i, r) in self.recs.iter().enumerate() {
            let o = EXTENT_LIST_HEADER + i * EXTENT_REC_SIZE;
            put_le32(b, o, r.cpos);
            put_le32(b, o + 4, r.clusters_raw);
            put_le64(b, o + 8, r.blkno);
        }
    }
}

/// An extent block (`ocfs2_extent_block`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtentBlock {
    /// Check.
    pub check: BlockCheck,
    /// Slot of the suballocator it came from.
    pub suballoc_slot: u16,
    /// Bit in that suballocator's group.
    pub suballoc_bit: u16,
    /// Must equal the volume's generation.
    pub fs_generation: u32,
    /// Its own block number.
    pub blkno: u64,
    /// Group it was allocated from (discontiguous groups).
    pub suballoc_loc: u64,
    /// Next leaf block.
    pub next_leaf_blk: u64,
    /// The list.
    pub list: ExtentList,
}

impl ExtentBlock {
    /// Decodes an extent block read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<ExtentBlock> {
        let d = Decoder::new(buf, block, "extent_block");
        d.signature(0, EXTENT_BLOCK_SIGNATURE, "h_signature")?;
        Ok(ExtentBlock {
            check: BlockCheck {
                crc32e: d.le32(8, "h_check")?,
                ecc: d.le16(12, "h_check")?,
            },
            suballoc_slot: d.le16(0x10, "h_suballoc_slot")?,
            suballoc_bit: d.le16(0x12, "h_suballoc_bit")?,
            fs_generation: d.le32(0x14, "h_fs_generation")?,
            blkno: d.le64(0x18, "h_blkno")?,
            suballoc_loc: d.le64(0x20, "h_suballoc_loc")?,
            next_leaf_blk: d.le64(0x28, "h_next_leaf_blk")?,
            list: ExtentList::decode(&d.sub(
                EXTENT_BLOCK_LIST_OFFSET,
                "extent_block",
                "h_list",
            )?)?,
        })
    }

    /// Encodes into a block-sized buffer (check left zero).
    pub fn encode(&self, b: &mut [u8]) {
        put_bytes(b, 0, EXTENT_BLOCK_SIGNATURE);
        put_le16(b, 0x10, self.suballoc_slot);
        put_le16(b, 0x12, self.suballoc_bit);
        put_le32(b, 0x14, self.fs_generation);
        put_le64(b, 0x18, self.blkno);
        put_le64(b, 0x20, self.suballoc_loc);
        put_le64(b, 0x28, self.next_leaf_blk);
        self.list.encode(&mut b[EXTENT_BLOCK_LIST_OFFSET..]);
    }
}
