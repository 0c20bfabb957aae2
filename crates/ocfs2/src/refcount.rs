//! Refcount blocks: reference counts of shared (reflinked) clusters.
//!
//! A refcount tree's root and leaves are `REFCNT1` blocks. A leaf (or a root
//! without the tree flag) holds records of (physical cluster, clusters, count);
//! a root with the tree flag holds an extent list pointing at leaves.

use crate::blockcheck::BlockCheck;
use crate::codec::Decoder;
use crate::error::DecodeResult;
use crate::extent::ExtentList;

/// Signature of a refcount block.
pub const REFCOUNT_BLOCK_SIGNATURE: &[u8; 8] = b"REFCNT1\0";
/// Flag: a leaf of a tree.
pub const REFCOUNT_LEAF_FL: u32 = 0x1;
/// Flag: the root of a tree (holds an extent list).
pub const REFCOUNT_TREE_FL: u32 = 0x2;

/// One refcount record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefcountRec {
    /// First physical cluster.
    pub cpos: u64,
    /// Clusters.
    pub clusters: u32,
    /// References.
    pub refcount: u32,
}

/// Records or extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefcountBody {
    /// Records.
    Records {
        /// Records that fit.
        count: u16,
        /// The used records.
        recs: Vec<RefcountRec>,
    },
    /// Extent list of leaves.
    Extents(ExtentList),
}

/// A refcount block (`ocfs2_refcount_block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefcountBlock {
    /// Suballocator slot.
    pub suballoc_slot: u16,
    /// Suballocator bit.
    pub suballoc_bit: u16,
    /// Volume generation.
    pub fs_generation: u32,
    /// Its own block.
    pub blkno: u64,
    /// Parent (leaves).
    pub parent: u64,
    /// Check.
    pub check: BlockCheck,
    /// Last extent block.
    pub last_eb_blk: u64,
    /// Inodes sharing the tree.
    pub count: u32,
    /// Flags.
    pub flags: u32,
    /// Clusters covered.
    pub clusters: u32,
    /// Cluster offset.
    pub cpos: u32,
    /// Tree generation.
    pub generation: u32,
    /// Group it came from.
    pub suballoc_loc: u64,
    /// Body.
    pub body: RefcountBody,
}

impl RefcountBlock {
    /// Decodes a refcount block read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<RefcountBlock> {
        let d = Decoder::new(buf, block, "refcount_block");
        d.signature(0, REFCOUNT_BLOCK_SIGNATURE, "rf_signature")?;
        let flags = d.le32(0x34, "rf_flags")?;
        let b = d.sub(0x80, "refcount_block", "rf_records")?;
        let body = if flags & REFCOUNT_TREE_FL != 0 {
            RefcountBody::Extents(ExtentList::decode(&b)?)
        } else {
            let count = b.le16(0, "rl_count")?;
            let used = b.le16(2, "rl_used")?;
            if usize::from(count) > b.buf().len().saturating_sub(16) / 16 {
                return Err(b.err("rl_count", format!("{count} records do not fit")));
            }
            if used > count {
                return Err(b.err("rl_used", format!("{used} is more than rl_count {count}")));
            }
            let mut recs = Vec::new();
            for i in 0..usize::from(used) {
                let o = 16 + i * 16;
                recs.push(RefcountRec {
                    cpos: b.le64(o, "r_cpos")?,
                    clusters: b.le32(o + 8, "r_clusters")?,
                    refcount: b.le32(o + 12, "r_refcount")?,
                });
            }
            RefcountBody::Records { count, recs }
        };
        Ok(RefcountBlock {
            suballoc_slot: d.le16(8, "rf_suballoc_slot")?,
            suballoc_bit: d.le16(10, "rf_suballoc_bit")?,
            fs_generation: d.le32(12, "rf_fs_generation")?,
            blkno: d.le64(0x10, "rf_blkno")?,
            parent: d.le64(0x18, "rf_parent")?,
            check: BlockCheck {
                crc32e: d.le32(0x20, "rf_check")?,
                ecc: d.le16(0x24, "rf_check")?,
            },
            last_eb_blk: d.le64(0x28, "rf_last_eb_blk")?,
            count: d.le32(0x30, "rf_count")?,
            flags,
            clusters: d.le32(0x38, "rf_clusters")?,
            cpos: d.le32(0x3C, "rf_cpos")?,
            generation: d.le32(0x40, "rf_generation")?,
            suballoc_loc: d.le64(0x48, "rf_suballoc_loc")?,
            body,
        })
    }
}
