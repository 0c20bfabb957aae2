//! Extended attribute headers and blocks.
//!
//! Attributes live in the inode's tail (inline, `i_xattr_inline_size` bytes), in
//! an xattr block (`XATTR01`) or in 4 KiB buckets of an xattr tree. Each place
//! starts with a header (count, free start, name+value bytes, buckets, check)
//! followed by 16-byte entries: name hash, name offset, name length, type (low 7
//! bits the namespace, high bit "value stored locally") and value size. Names
//! and values are packed from the end of the area; a value too long to sit
//! after its name (over 80 bytes) is replaced there by a value root whose
//! extent list maps the clusters holding it.
//!
//! [`decode_area`] locates every name and value of one area (bounds-checked,
//! errors name the block and field); `Volume::xattrs` walks the places and
//! reads the values kept outside.

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

/// Bytes of an xattr bucket, whatever the block size.
pub const XATTR_BUCKET_SIZE: usize = 4096;
/// Longest value stored next to its name; longer ones live in clusters.
pub const XATTR_INLINE_SIZE: u64 = 80;
/// Bytes of the value root stored in place of a value kept outside: clusters
/// (4), reserved (4), last extent block (8), and an extent list with room for
/// one record (16 + 16).
pub const XATTR_ROOT_SIZE: usize = 48;
/// Longest value the kernel accepts (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: u64 = 65536;
/// Entry type bits that hold the namespace.
pub const XATTR_TYPE_MASK: u8 = 0x7F;
/// Offset of `xh_check` in a header (the bucket's check).
pub const XATTR_HEADER_CHECK_OFFSET: usize = 8;
/// Offset of `xb_check` in an xattr block.
pub const XATTR_BLOCK_CHECK_OFFSET: usize = 0x18;
/// Offset of `xb_attrs` (header or tree root) in an xattr block.
pub const XATTR_BLOCK_ATTRS_OFFSET: usize = 0x30;

/// Namespace numbers of `xe_type` (the kernel's `ocfs2_xattr_type`).
pub mod namespace {
    /// `user.`
    pub const USER: u8 = 1;
    /// `system.posix_acl_access` (the name stored is empty).
    pub const POSIX_ACL_ACCESS: u8 = 2;
    /// `system.posix_acl_default` (the name stored is empty).
    pub const POSIX_ACL_DEFAULT: u8 = 3;
    /// `trusted.`
    pub const TRUSTED: u8 = 4;
    /// `security.`
    pub const SECURITY: u8 = 5;
}

/// The prefix the VFS shows before a stored name of namespace `ns`, or `None`
/// for numbers no kernel handler claims (the kernel lists no such entry).
pub fn name_prefix(ns: u8) -> Option<&'static str> {
    match ns {
        namespace::USER => Some("user."),
        namespace::POSIX_ACL_ACCESS => Some("system.posix_acl_access"),
        namespace::POSIX_ACL_DEFAULT => Some("system.posix_acl_default"),
        namespace::TRUSTED => Some("trusted."),
        namespace::SECURITY => Some("security."),
        _ => None,
    }
}

/// Turns a POSIX ACL as OCFS2 stores it (8-byte entries: tag, permissions,
/// id, no header) into the form `getxattr` returns (the same entries after a
/// 4-byte version, 2).
pub fn acl_to_vfs(stored: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + stored.len());
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(stored);
    v
}

/// Where a value kept outside its entry lives (`ocfs2_xattr_value_root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrValueRoot {
    /// Clusters holding the value.
    pub clusters: u32,
    /// Last extent block of the value's tree.
    pub last_eb_blk: u64,
    /// The value's extents (file clusters counted from the value's start).
    pub list: ExtentList,
}

impl XattrValueRoot {
    /// Decodes a value root at the start of `d`.
    pub fn decode(d: &Decoder<'_>) -> DecodeResult<XattrValueRoot> {
        Ok(XattrValueRoot {
            clusters: d.le32(0, "xr_clusters")?,
            last_eb_blk: d.le64(8, "xr_last_eb_blk")?,
            list: ExtentList::decode(&d.sub(16, "xattr_value_root", "xr_list")?)?,
        })
    }
}

/// A value as found next to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrValue {
    /// The value itself.
    Local(Vec<u8>),
    /// The value lives in clusters; `size` bytes of them.
    Outside {
        /// Value length.
        size: u64,
        /// Its extents.
        root: XattrValueRoot,
    },
}

/// One attribute of a header area, name and value located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrItem {
    /// Namespace number (`xe_type` without the local bit).
    pub namespace: u8,
    /// The stored name (without prefix).
    pub name: Vec<u8>,
    /// The value or where it lives.
    pub value: XattrValue,
}

impl XattrItem {
    /// The name the VFS shows: prefix + stored name (`None` for an unknown
    /// namespace).
    pub fn full_name(&self) -> Option<String> {
        let prefix = name_prefix(self.namespace)?;
        Some(format!("{prefix}{}", String::from_utf8_lossy(&self.name)))
    }
}

/// Decodes the attributes of an area that starts with a header: the inode's
/// inline area, an xattr block's `xb_attrs`, or a whole bucket. Names and
/// values sit at `xe_name_offset` from the start of the area; a value follows
/// its name rounded up to 4 bytes and is either the value (local bit set) or
/// an [`XattrValueRoot`].
pub fn decode_area(d: &Decoder<'_>) -> DecodeResult<Vec<XattrItem>> {
    let header = XattrHeader::decode(d)?;
    let mut out = Vec::with_capacity(header.entries.len());
    for e in &header.entries {
        let name_off = usize::from(e.name_offset);
        let name = d.bytes(name_off, e.name_len.into(), "xe_name_offset")?;
        let value_off = name_off + usize::from(e.name_len).div_ceil(4) * 4;
        let value = if e.xtype & XATTR_ENTRY_LOCAL != 0 {
            if e.value_size > XATTR_INLINE_SIZE {
                return Err(d.err(
                    "xe_value_size",
                    format!(
                        "{} bytes stored locally, more than {XATTR_INLINE_SIZE}",
                        e.value_size
                    ),
                ));
            }
            XattrValue::Local(
                d.bytes(value_off, e.value_size as usize, "xe_value_size")?
                    .to_vec(),
            )
        } else {
            if e.value_size > XATTR_SIZE_MAX {
                return Err(d.err(
                    "xe_value_size",
                    format!("{} bytes, more than {XATTR_SIZE_MAX}", e.value_size),
                ));
            }
            // Bounded to the root's own size: the list inside must not
            // borrow records from whatever follows it.
            let root = d.bytes(value_off, XATTR_ROOT_SIZE, "xe_name_offset")?;
            let rd = Decoder::new(root, d.block(), "xattr_value_root");
            XattrValue::Outside {
                size: e.value_size,
                root: XattrValueRoot::decode(&rd)?,
            }
        };
        out.push(XattrItem {
            namespace: e.xtype & XATTR_TYPE_MASK,
            name: name.to_vec(),
            value,
        });
    }
    Ok(out)
}
