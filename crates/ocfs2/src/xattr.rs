//! Extended attribute headers and blocks.
//!
//! Attributes live in the inode's tail (inline, `i_xattr_inline_size` bytes), in
//! an xattr block (`XATTR01`) or in 4 KiB buckets of an xattr tree. Each place
//! starts with a header (count, free start, name+value bytes, buckets, check)
//! followed by 16-byte entries: name hash, name offset, name length, type (low 7
//! bits the namespace, high bit "value stored locally") and value size. Names
//! and values are packed from the end of the area.

use crate::blockcheck::BlockCheck;
use crate::codec::Decoder;
use crate::error::DecodeResult;
use crate::extent::ExtentList;

/// Signature of an xattr block.
pub const XATTR_BLOCK_SIGNATURE: &[u8; 8] = b"XATTR01\0";
/// Block flag: the block roots an xattr tree.
pub const XATTR_INDEXED: u16 = 0x1;
/// Entry type bit: the value is stored locally.
pub const XATTR_ENTRY_LOCAL: u8 = 0x80;

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrEntry {
    /// Hash of prefix + name.
    pub name_hash: u32,
    /// Offset of the name in the storage area.
    pub name_offset: u16,
    /// Name length (without prefix).
    pub name_len: u8,
    /// Namespace and local bit.
    pub xtype: u8,
    /// Value length.
    pub value_size: u64,
}

/// A header with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrHeader {
    /// Entries.
    pub count: u16,
    /// Where free space starts.
    pub free_start: u16,
    /// Bytes of names and values.
    pub name_value_len: u16,
    /// Buckets (first bucket only).
    pub num_buckets: u16,
    /// Check (buckets only).
    pub check: BlockCheck,
    /// The entries.
    pub entries: Vec<XattrEntry>,
}

impl XattrHeader {
    /// Decodes a header at the start of `d`.
    pub fn decode(d: &Decoder<'_>) -> DecodeResult<XattrHeader> {
        let count = d.le16(0, "xh_count")?;
        if usize::from(count) * 16 + 16 > d.buf().len() {
            return Err(d.err(
                "xh_count",
                format!("{count} entries do not fit in {} bytes", d.buf().len()),
            ));
        }
        let mut entries = Vec::with_capacity(count.into());
        for i in 0..usize::from(count) {
            let o = 16 + i * 16;
            entries.push(XattrEntry {
                name_hash: d.le32(o, "xe_name_hash")?,
                name_offset: d.le16(o + 4, "xe_name_offset")?,
                name_len: d.u8(o + 6, "xe_name_len")?,
                xtype: d.u8(o + 7, "xe_type")?,
                value_size: d.le64(o + 8, "xe_value_size")?,
            });
        }
        Ok(XattrHeader {
            count,
            free_start: d.le16(2, "xh_free_start")?,
            name_value_len: d.le16(4, "xh_name_value_len")?,
            num_buckets: d.le16(6, "xh_num_buckets")?,
            check: BlockCheck {
                crc32e: d.le32(8, "xh_check")?,
                ecc: d.le16(12, "xh_check")?,
            },
            entries,
        })
    }
}

/// What an xattr block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrBlockBody {
    /// Attributes directly.
    Header(XattrHeader),
    /// A tree of buckets: clusters, last extent block, extent list.
    Tree {
        /// Clusters in the tree.
        clusters: u32,
        /// Last extent block.
        last_eb_blk: u64,
        /// Extent list of buckets.
        list: ExtentList,
    },
}

/// An xattr block (`ocfs2_xattr_block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrBlock {
    /// Suballocator slot.
    pub suballoc_slot: u16,
    /// Suballocator bit.
    pub suballoc_bit: u16,
    /// Volume generation.
    pub fs_generation: u32,
    /// Its own block.
    pub blkno: u64,
    /// Check.
    pub check: BlockCheck,
    /// Flags.
    pub flags: u16,
    /// Group it came from.
    pub suballoc_loc: u64,
    /// Header or tree.
    pub body: XattrBlockBody,
}

impl XattrBlock {
    /// Decodes an xattr block read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<XattrBlock> {
        let d = Decoder::new(buf, block, "xattr_block");
        d.signature(0, XATTR_BLOCK_SIGNATURE, "xb_signature")?;
        let flags = d.le16(0x20, "xb_flags")?;
        let attrs = d.sub(0x30, "xattr_block", "xb_attrs")?;
        let body = if flags & XATTR_INDEXED != 0 {
            XattrBlockBody::Tree {
                clusters: attrs.le32(0, "xt_clusters")?,
                last_eb_blk: attrs.le64(8, "xt_last_eb_blk")?,
                list: ExtentList::decode(&attrs.sub(16, "xattr_tree_root", "xt_list")?)?,
            }
        } else {
            XattrBlockBody::Header(XattrHeader::decode(&attrs)?)
        };
        Ok(XattrBlock {
            suballoc_slot: d.le16(8, "xb_suballoc_slot")?,
            suballoc_bit: d.le16(10, "xb_suballoc_bit")?,
            fs_generation: d.le32(12, "xb_fs_generation")?,
            blkno: d.le64(0x10, "xb_blkno")?,
            check: BlockCheck {
                crc32e: d.le32(0x18, "xb_check")?,
                ecc: d.le16(0x1C, "xb_check")?,
            },
            flags,
            suballoc_loc: d.le64(0x28, "xb_suballoc_loc")?,
            body,
        })
    }
}
