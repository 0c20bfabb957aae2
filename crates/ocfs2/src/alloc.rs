//! Chain allocators: chain lists and group descriptors.
//!
//! The global bitmap (one bit per cluster) and every suballocator (inode and
//! extent allocators, one bit per block) are dinodes whose `id2` is a chain list:
//! clusters per group, bits per cluster, and up to `cl_count` chains, each a
//! singly linked list of groups with its free and total bit counts. A group
//! starts with a descriptor block (`GROUP01`) holding its bitmap; bit 0 of every
//! group is the descriptor itself. Suballocator groups on volumes with
//! `discontig-bg` have a 256-byte bitmap followed by an extent list; a non-empty
//! list means the group is made of several pieces.

use crate::blockcheck::BlockCheck;
use crate::codec::{put_bytes, put_le16, put_le32, put_le64, Decoder};
use crate::error::DecodeResult;
use crate::extent::ExtentList;

/// Signature of a group descriptor.
pub const GROUP_DESC_SIGNATURE: &[u8; 8] = b"GROUP01\0";
/// Offset of the bitmap in a group descriptor.
pub const GROUP_BITMAP_OFFSET: usize = 0x40;
/// Offset of the check in a group descriptor.
pub const GROUP_CHECK_OFFSET: usize = 0x30;
/// Largest suballocator bitmap (bytes); the discontiguous list follows it.
pub const MAX_BG_BITMAP_SIZE: usize = 256;
/// Offset of the discontiguous extent list.
pub const GROUP_LIST_OFFSET: usize = GROUP_BITMAP_OFFSET + MAX_BG_BITMAP_SIZE;
/// Size of the chain list header.
pub const CHAIN_LIST_HEADER: usize = 16;
/// Size of one chain record.
pub const CHAIN_REC_SIZE: usize = 16;

/// One chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainRec {
    /// Free bits in the chain.
    pub free: u32,
    /// Total bits in the chain.
    pub total: u32,
    /// First group's block.
    pub blkno: u64,
}

/// A chain list (`ocfs2_chain_list`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainList {
    /// Clusters per group.
    pub cpg: u16,
    /// Bits per cluster.
    pub bpc: u16,
    /// Chains that fit.
    pub count: u16,
    /// Chains in use (decoded into `recs`).
    pub next_free_rec: u16,
    /// The chains in use.
    pub recs: Vec<ChainRec>,
}

impl ChainList {
    /// Chains that fit in `space` bytes.
    pub fn capacity(space: usize) -> u16 {
        (space.saturating_sub(CHAIN_LIST_HEADER) / CHAIN_REC_SIZE) as u16
    }

    /// Decodes the list at the start of `d`.
    pub fn decode(d: &Decoder<'_>) -> DecodeResult<ChainList> {
        let count = d.le16(4, "cl_count")?;
        let next_free_rec = d.le16(6, "cl_next_free_rec")?;
        if count > Self::capacity(d.buf().len()) {
            return Err(d.err(
                "cl_count",
                format!("{count} chains do not fit in {} bytes", d.buf().len()),
            ));
        }
        if next_free_rec > count {
            return Err(d.err(
                "cl_next_free_rec",
                format!("{next_free_rec} is more than cl_count {count}"),
            ));
        }
        let mut recs = Vec::with_capacity(next_free_rec.into());
        for i in 0..usize::from(next_free_rec) {
            let o = CHAIN_LIST_HEADER + i * CHAIN_REC_SIZE;
            recs.push(ChainRec {
                free: d.le32(o, "c_free")?,
                total: d.le32(o + 4, "c_total")?,
                blkno: d.le64(o + 8, "c_blkno")?,
            });
        }
        Ok(ChainList {
            cpg: d.le16(0, "cl_cpg")?,
            bpc: d.le16(2, "cl_bpc")?,
            count,
            next_free_rec,
            recs,
        })
    }

    /// Encodes into `b`.
    pub fn encode(&self, b: &mut [u8]) {
        put_le16(b, 0, self.cpg);
        put_le16(b, 2, self.bpc);
        put_le16(b, 4, self.count);
        put_le16(b, 6, self.next_free_rec);
        for (i, r) in self.recs.iter().enumerate() {
            let o = CHAIN_LIST_HEADER + i * CHAIN_REC_SIZE;
            put_le32(b, o, r.free);
            put_le32(b, o + 4, r.total);
            put_le64(b, o + 8, r.blkno);
        }
    }
}

/// A group descriptor (`ocfs2_group_desc`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupDesc {
    /// Bytes of bitmap.
    pub size: u16,
    /// Bits in the group.
    pub bits: u16,
    /// Free bits.
    pub free_bits_count: u16,
    /// Chain it is on.
    pub chain: u16,
    /// Volume generation.
    pub generation: u32,
    /// Longest run of free bits (0 when not kept).
    pub contig_free_bits: u16,
    /// Next group of the chain (0 at the end).
    pub next_group: u64,
    /// Allocator inode owning the group.
    pub parent_dinode: u64,
    /// Its own block.
    pub blkno: u64,
    /// Check.
    pub check: BlockCheck,
    /// The bitmap (`size` bytes).
    pub bitmap: Vec<u8>,
    /// Pieces of a discontiguous group (empty when contiguous).
    pub list: Option<ExtentList>,
}

impl GroupDesc {
    /// Decodes a descriptor read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<GroupDesc> {
        let d = Decoder::new(buf, block, "group_desc");
        d.signature(0, GROUP_DESC_SIGNATURE, "bg_signature")?;
        let size = d.le16(8, "bg_size")?;
        let bits = d.le16(10, "bg_bits")?;
        let free_bits_count = d.le16(12, "bg_free_bits_count")?;
        if usize::from(bits) > usize::from(size) * 8 {
            return Err(d.err(
                "bg_bits",
                format!("{bits} bits do not fit in a {size}-byte bitmap"),
            ));
        }
        if free_bits_count > bits {
            return Err(d.err(
                "bg_free_bits_count",
                format!("{free_bits_count} is more than bg_bits {bits}"),
            ));
        }
        let bitmap = d
            .bytes(GROUP_BITMAP_OFFSET, size.into(), "bg_bitmap")?
            .to_vec();
        let list = if usize::from(size) == MAX_BG_BITMAP_SIZE && buf.len() > GROUP_LIST_OFFSET + 16
        {
            let l = ExtentList::decode(&d.sub(GROUP_LIST_OFFSET, "group_desc", "bg_list")?)?;
            (l.next_free_rec > 0).then_some(l)
        } else {
            None
        };
        Ok(GroupDesc {
            size,
            bits,
            free_bits_count,
            chain: d.le16(14, "bg_chain")?,
            generation: d.le32(0x10, "bg_generation")?,
            contig_free_bits: d.le16(0x14, "bg_contig_free_bits")?,
            next_group: d.le64(0x18, "bg_next_group")?,
            parent_dinode: d.le64(0x20, "bg_parent_dinode")?,
            blkno: d.le64(0x28, "bg_blkno")?,
            check: BlockCheck {
                crc32e: d.le32(0x30, "bg_check")?,
                ecc: d.le16(0x34, "bg_check")?,
            },
            bitmap,
            list,
        })
    }

    /// Encodes into a block-sized buffer (check left zero).
    pub fn encode(&self, b: &mut [u8]) {
        put_bytes(b, 0, GROUP_DESC_SIGNATURE);
        put_le16(b, 8, self.size);
        put_le16(b, 10, self.bits);
        put_le16(b, 12, self.free_bits_count);
        put_le16(b, 14, self.chain);
        put_le32(b, 0x10, self.generation);
        put_le16(b, 0x14, self.contig_free_bits);
        put_le64(b, 0x18, self.next_group);
        put_le64(b, 0x20, self.parent_dinode);
        put_le64(b, 0x28, self.blkno);
        put_bytes(b, GROUP_BITMAP_OFFSET, &self.bitmap);
        if let Some(l) = &self.list {
            l.encode(&mut b[GROUP_LIST_OFFSET..]);
        }
    }
}
