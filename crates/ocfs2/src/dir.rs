//! Directories: entries, block trailers, and the indexed-directory tree.
//!
//! A directory's data (its blocks, or the inline area of its inode) is a chain of
//! variable-length entries: inode (8), record length (2), name length (1), file
//! type (1), name, padded so every record is a multiple of 4 and the records of a
//! block add up to the block. With `metaecc` or `indexed-dirs`, each directory
//! block ends in a 64-byte trailer (`DIRTRL1`) shaped so that old code sees it as
//! an unused entry; it carries the block's check. Indexed directories add a root
//! block (`DXDIR01`) holding either a short list of hash entries or an extent list
//! of leaf blocks (`DXLEAF1`), each entry pointing at the block with the name.

use crate::blockcheck::BlockCheck;
use crate::codec::{put_bytes, put_le16, put_le64, put_u8, Decoder};
use crate::error::{DecodeError, DecodeResult};
use crate::extent::ExtentList;

/// Bytes before the name in an entry.
pub const DIR_MEMBER_LEN: usize = 12;
/// Size of the block trailer.
pub const DIR_TRAILER_SIZE: usize = 64;
/// Signature of the trailer.
pub const DIR_TRAILER_SIGNATURE: &[u8; 8] = b"DIRTRL1\0";
/// Offset of the check inside the trailer.
pub const DIR_TRAILER_CHECK_OFFSET: usize = 0x38;
/// Signature of an indexed-directory root.
pub const DX_ROOT_SIGNATURE: &[u8; 8] = b"DXDIR01\0";
/// Signature of an indexed-directory leaf.
pub const DX_LEAF_SIGNATURE: &[u8; 8] = b"DXLEAF1\0";
/// Root flag: entries are inline in the root block.
pub const DX_FLAG_INLINE: u8 = 0x01;
/// Longest name.
pub const MAX_FILENAME_LEN: usize = 255;

/// Directory entry file types.
pub mod file_type {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REG_FILE: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHRDEV: u8 = 3;
    /// Block device.
    pub const BLKDEV: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// Record length of an entry whose name has `name_len` bytes.
pub fn rec_len(name_len: usize) -> usize {
    (name_len + DIR_MEMBER_LEN + 3) & !3
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode block (0: unused record).
    pub inode: u64,
    /// Record length.
    pub rec_len: u16,
    /// File type.
    pub file_type: u8,
    /// Name bytes.
    pub name: Vec<u8>,
    /// Offset of the record in the data it was read from.
    pub offset: usize,
}

impl DirEntry {
    /// Name as text.
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Decodes the entries of `data` (one directory block without its trailer, or an
/// inline area). Unused records (inode 0) are skipped.
pub fn decode_entries(data: &[u8], block: u64) -> DecodeResult<Vec<DirEntry>> {
    let d = Decoder::new(data, block, "dir_entry");
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let inode = d.le64(off, "inode")?;
        let rl = d.le16(off + 8, "rec_len")?;
        let name_len = d.u8(off + 10, "name_len")?;
        let ft = d.u8(off + 11, "file_type")?;
        let rl_us = usize::from(rl);
        if rl_us < rec_len(1) || rl_us % 4 != 0 {
            return Err(at(
                d.err(
                    "rec_len",
                    format!("{rl} is not a multiple of 4 of at least 16"),
                ),
                off,
            ));
        }
        if off + rl_us > data.len() {
            return Err(at(
                d.err(
                    "rec_len",
                    format!("{rl} runs past the end of the {}-byte block", data.len()),
                ),
                off,
            ));
        }
        if inode != 0 {
            if DIR_MEMBER_LEN + usize::from(name_len) > rl_us {
                return Err(at(
                    d.err(
                        "name_len",
                        format!("{name_len} does not fit in rec_len {rl}"),
                    ),
                    off,
                ));
            }
            if name_len == 0 {
                return Err(at(d.err("name_len", "0 in a used entry"), off));
            }
            let name = d
                .bytes(off + DIR_MEMBER_LEN, name_len.into(), "name")?
                .to_vec();
            out.push(DirEntry {
                inode,
                rec_len: rl,
                file_type: ft,
                name,
                offset: off,
            });
        }
        off += rl_us;
    }
    Ok(out)
}

fn at(mut e: DecodeError, off: usize) -> DecodeError {
    e.problem = format!("{} (entry at byte {off})", e.problem);
    e
}

/// Writes an entry at `off` of `buf`.
pub fn encode_entry(
    buf: &mut [u8],
    off: usize,
    inode: u64,
    rec_len: u16,
    file_type: u8,
    name: &[u8],
) {
    put_le64(buf, off, inode);
    put_le16(buf, off + 8, rec_len);
    put_u8(buf, off + 10, name.len() as u8);
    put_u8(buf, off + 11, file_type);
    put_bytes(buf, off + DIR_MEMBER_LEN, name);
}

/// Lays `entries` (inode, type, name) out in a data area of `len` bytes, the last
/// record taking the rest. Returns `None` when they do not fit.
pub fn build_entries(len: usize, entries: &[(u64, u8, &[u8])]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut off = 0;
    for (i, (ino, ft, name)) in entries.iter().enumerate() {
        let need = rec_len(name.len());
        let rl = if i + 1 == entries.len() {
            len.checked_sub(off)?
        } else {
            need
        };
        if rl < need || off + rl > len {
            return None;
        }
        encode_entry(&mut buf, off, *ino, rl as u16, *ft, name);
        off += rl;
    }
    if entries.is_empty() {
        put_le16(&mut buf, 8, len as u16);
    }
    Some(buf)
}

/// A directory block trailer (`ocfs2_dir_block_trailer`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirTrailer {
    /// Largest free hole (kept by indexed directories).
    pub free_rec_len: u16,
    /// Next block of the free list.
    pub free_next: u64,
    /// Its own block.
    pub blkno: u64,
    /// Directory inode.
    pub parent_dinode: u64,
    /// Check of the whole block.
    pub check: BlockCheck,
}

impl DirTrailer {
    /// Decodes the trailer at the end of the directory block `buf`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<DirTrailer> {
        let start = buf
            .len()
            .checked_sub(DIR_TRAILER_SIZE)
            .ok_or_else(|| DecodeError {
                block,
                structure: "dir_trailer",
                field: "db_signature",
                problem: "block smaller than a trailer".into(),
            })?;
        let d = Decoder::new(&buf[start..], block, "dir_trailer");
        d.signature(0x10, DIR_TRAILER_SIGNATURE, "db_signature")?;
        Ok(DirTrailer {
            free_rec_len: d.le16(0x0E, "db_free_rec_len")?,
            free_next: d.le64(0x20, "db_free_next")?,
            blkno: d.le64(0x28, "db_blkno")?,
            parent_dinode: d.le64(0x30, "db_parent_dinode")?,
            check: BlockCheck {
                crc32e: d.le32(0x38, "db_check")?,
                ecc: d.le16(0x3C, "db_check")?,
            },
        })
    }

    /// Writes the trailer at the end of `block_buf` (check left zero).
    pub fn encode(&self, block_buf: &mut [u8]) {
        let start = block_buf.len() - DIR_TRAILER_SIZE;
        let b = &mut block_buf[start..];
        b.fill(0);
        put_le16(b, 0x08, DIR_TRAILER_SIZE as u16);
        put_le16(b, 0x0E, self.free_rec_len);
        put_bytes(b, 0x10, DIR_TRAILER_SIGNATURE);
        put_le64(b, 0x20, self.free_next);
        put_le64(b, 0x28, self.blkno);
        put_le64(b, 0x30, self.parent_dinode);
    }
}

/// One indexed-directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DxEntry {
    /// Major hash.
    pub major_hash: u32,
    /// Minor hash.
    pub minor_hash: u32,
    /// Directory block holding the name.
    pub dirent_blk: u64,
}

/// A list of indexed-directory entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DxEntryList {
    /// Entries that fit.
    pub count: u16,
    /// Entries in use.
    pub entries: Vec<DxEntry>,
}

impl DxEntryList {
    fn decode(d: &Decoder<'_>) -> DecodeResult<DxEntryList> {
        let count = d.le16(4, "de_count")?;
        let used = d.le16(6, "de_num_used")?;
        if usize::from(count) > d.buf().len().saturating_sub(8) / 16 {
            return Err(d.err("de_count", format!("{count} entries do not fit")));
        }
        if used > count {
            return Err(d.err(
                "de_num_used",
                format!("{used} is more than de_count {count}"),
            ));
        }
        let mut entries = Vec::new();
        for i in 0..usize::from(used) {
            let o = 8 + i * 16;
            entries.push(DxEntry {
                major_hash: d.le32(o, "dx_major_hash")?,
                minor_hash: d.le32(o + 4, "dx_minor_hash")?,
                dirent_blk: d.le64(o + 8, "dx_dirent_blk")?,
            });
        }
        Ok(DxEntryList { count, entries })
    }
}

/// What an indexed-directory root holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DxRootBody {
    /// Entries inline.
    Entries(DxEntryList),
    /// Extent list of leaf blocks.
    Extents(ExtentList),
}

/// An indexed-directory root (`ocfs2_dx_root_block`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxRoot {
    /// Check.
    pub check: BlockCheck,
    /// Suballocator slot.
    pub suballoc_slot: u16,
    /// Suballocator bit.
    pub suballoc_bit: u16,
    /// Volume generation.
    pub fs_generation: u32,
    /// Its own block.
    pub blkno: u64,
    /// Last extent block.
    pub last_eb_blk: u64,
    /// Clusters of the index.
    pub clusters: u32,
    /// Flags (inline).
    pub flags: u8,
    /// The directory inode.
    pub dir_blkno: u64,
    /// Names in the directory.
    pub num_entries: u32,
    /// Head of the free-space list.
    pub free_blk: u64,
    /// Group it came from.
    pub suballoc_loc: u64,
    /// Entries or extents.
    pub body: DxRootBody,
}

impl DxRoot {
    /// Decodes a root read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<DxRoot> {
        let d = Decoder::new(buf, block, "dx_root");
        d.signature(0, DX_ROOT_SIGNATURE, "dr_signature")?;
        let flags = d.u8(0x2C, "dr_flags")?;
        let body_d = d.sub(0xC0, "dx_root", "dr_list")?;
        let body = if flags & DX_FLAG_INLINE != 0 {
            DxRootBody::Entries(DxEntryList::decode(&body_d)?)
        } else {
            DxRootBody::Extents(ExtentList::decode(&body_d)?)
        };
        Ok(DxRoot {
            check: BlockCheck {
                crc32e: d.le32(8, "dr_check")?,
                ecc: d.le16(12, "dr_check")?,
            },
            suballoc_slot: d.le16(0x10, "dr_suballoc_slot")?,
            suballoc_bit: d.le16(0x12, "dr_suballoc_bit")?,
            fs_generation: d.le32(0x14, "dr_fs_generation")?,
            blkno: d.le64(0x18, "dr_blkno")?,
            last_eb_blk: d.le64(0x20, "dr_last_eb_blk")?,
            clusters: d.le32(0x28, "dr_clusters")?,
            flags,
            dir_blkno: d.le64(0x30, "dr_dir_blkno")?,
            num_entries: d.le32(0x38, "dr_num_entries")?,
            free_blk: d.le64(0x40, "dr_free_blk")?,
            suballoc_loc: d.le64(0x48, "dr_suballoc_loc")?,
            body,
        })
    }
}

/// An indexed-directory leaf (`ocfs2_dx_leaf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DxLeaf {
    /// Check.
    pub check: BlockCheck,
    /// Its own block.
    pub blkno: u64,
    /// Volume generation.
    pub fs_generation: u32,
    /// Entries.
    pub list: DxEntryList,
}

impl DxLeaf {
    /// Decodes a leaf read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<DxLeaf> {
        let d = Decoder::new(buf, block, "dx_leaf");
        d.signature(0, DX_LEAF_SIGNATURE, "dl_signature")?;
        Ok(DxLeaf {
            check: BlockCheck {
                crc32e: d.le32(8, "dl_check")?,
                ecc: d.le16(12, "dl_check")?,
            },
            blkno: d.le64(0x10, "dl_blkno")?,
            fs_generation: d.le32(0x18, "dl_fs_generation")?,
            list: DxEntryList::decode(&d.sub(0x28, "dx_leaf", "dl_list")?)?,
        })
    }
}
