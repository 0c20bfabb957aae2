//! The dinode: one block per inode, with two unions.
//!
//! A dinode (`INODE01`, or `OCFSV2` for the superblock) holds the usual inode
//! fields, the metaecc check at 0x80, and two unions whose meaning follows from
//! the flags: `id1` at 0xB8 (8 bytes: device number, bitmap used/total counts, or
//! journal flags) and `id2` at 0xC0 running to the end of the block (superblock,
//! local alloc bitmap, chain list, extent list, truncate log, inline data, or a
//! fast symlink's target). [`Dinode::decode`] picks the `id2` variant the way the
//! kernel does and returns it as [`Body`].

use crate::alloc::ChainList;
use crate::blockcheck::BlockCheck;
use crate::codec::{put_bytes, put_le16, put_le32, put_le64, Decoder};
use crate::error::DecodeResult;
use crate::extent::ExtentList;
use crate::superblock::{SuperBlock, SUPER_BLOCK_SIGNATURE};

/// Signature of an inode.
pub const INODE_SIGNATURE: &[u8; 8] = b"INODE01\0";
/// Offset of the check.
pub const DINODE_CHECK_OFFSET: usize = 0x80;
/// Offset of `id1`.
pub const ID1_OFFSET: usize = 0xB8;
/// Offset of `id2`.
pub const ID2_OFFSET: usize = 0xC0;

/// `i_flags` bits.
pub mod flags {
    /// Inode is in use.
    pub const VALID: u32 = 0x0001;
    /// On an orphan list.
    pub const ORPHANED: u32 = 0x0004;
    /// System inode.
    pub const SYSTEM: u32 = 0x0010;
    /// The superblock.
    pub const SUPER_BLOCK: u32 = 0x0020;
    /// A slot's local alloc.
    pub const LOCAL_ALLOC: u32 = 0x0040;
    /// An allocation bitmap.
    pub const BITMAP: u32 = 0x0080;
    /// A journal.
    pub const JOURNAL: u32 = 0x0100;
    /// The heartbeat area.
    pub const HEARTBEAT: u32 = 0x0200;
    /// A chain allocator.
    pub const CHAIN: u32 = 0x0400;
    /// A truncate log.
    pub const DEALLOC: u32 = 0x0800;
    /// A quota file.
    pub const QUOTA: u32 = 0x1000;
    /// On the orphan list for append direct I/O.
    pub const DIO_ORPHANED: u32 = 0x2000;
}

/// `i_dyn_features` bits.
pub mod dyn_features {
    /// Data lives in the inode block.
    pub const INLINE_DATA: u16 = 0x0001;
    /// Has extended attributes.
    pub const HAS_XATTR: u16 = 0x0002;
    /// Extended attributes in the inode block.
    pub const INLINE_XATTR: u16 = 0x0004;
    /// Indexed directory.
    pub const INDEXED_DIR: u16 = 0x0008;
    /// Has a refcount tree.
    pub const HAS_REFCOUNT: u16 = 0x0010;
}

/// Journal flag in `id1`: the journal needs recovery.
pub const JOURNAL_DIRTY_FL: u32 = 0x0001;

/// File types as mode bits.
pub mod mode {
    /// Type mask.
    pub const S_IFMT: u16 = 0o170000;
    /// Directory.
    pub const S_IFDIR: u16 = 0o040000;
    /// Regular file.
    pub const S_IFREG: u16 = 0o100000;
    /// Symbolic link.
    pub const S_IFLNK: u16 = 0o120000;
    /// Character device.
    pub const S_IFCHR: u16 = 0o020000;
    /// Block device.
    pub const S_IFBLK: u16 = 0o060000;
    /// FIFO.
    pub const S_IFIFO: u16 = 0o010000;
    /// Socket.
    pub const S_IFSOCK: u16 = 0o140000;
}

/// Local alloc window (`ocfs2_local_alloc`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalAlloc {
    /// First global-bitmap bit the window covers.
    pub bm_off: u32,
    /// Bytes of bitmap.
    pub size: u16,
    /// The bitmap.
    pub bitmap: Vec<u8>,
}

/// One truncate log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TruncateRec {
    /// First cluster.
    pub start: u32,
    /// Clusters.
    pub clusters: u32,
}

/// Truncate log (`ocfs2_truncate_log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TruncateLog {
    /// Records that fit.
    pub count: u16,
    /// Records used (decoded into `recs`).
    pub used: u16,
    /// The used records.
    pub recs: Vec<TruncateRec>,
}

/// Inline data (`ocfs2_inline_data`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InlineData {
    /// Bytes available for data.
    pub count: u16,
    /// The data area (`count` bytes).
    pub data: Vec<u8>,
}

/// What `id2` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The superblock.
    Super(SuperBlock),
    /// A local alloc.
    LocalAlloc(LocalAlloc),
    /// A chain allocator.
    Chain(ChainList),
    /// A truncate log.
    TruncateLog(TruncateLog),
    /// Inline data.
    Inline(InlineData),
    /// A fast symlink's target (the bytes up to the first NUL).
    FastSymlink(Vec<u8>),
    /// An extent list.
    Extents(ExtentList),
    /// Nothing (device files, FIFOs, sockets).
    None,
}

/// A decoded dinode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dinode {
    /// The superblock's signature instead of the inode one.
    pub is_super: bool,
    /// Generation.
    pub generation: u32,
    /// Slot of the suballocator (0xFFFF: global).
    pub suballoc_slot: u16,
    /// Bit in the suballocator group.
    pub suballoc_bit: u16,
    /// High 16 bits of the link count.
    pub links_count_hi: u16,
    /// Inline xattr area size.
    pub xattr_inline_size: u16,
    /// Clusters allocated.
    pub clusters: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Mode.
    pub mode: u16,
    /// Low 16 bits of the link count.
    pub links_count: u16,
    /// `i_flags`.
    pub flags: u32,
    /// Access time, seconds.
    pub atime: u64,
    /// Change time, seconds.
    pub ctime: u64,
    /// Modification time, seconds.
    pub mtime: u64,
    /// Deletion time.
    pub dtime: u64,
    /// Its own block.
    pub blkno: u64,
    /// Last extent block.
    pub last_eb_blk: u64,
    /// Volume generation.
    pub fs_generation: u32,
    /// Nanoseconds of atime.
    pub atime_nsec: u32,
    /// Nanoseconds of ctime.
    pub ctime_nsec: u32,
    /// Nanoseconds of mtime.
    pub mtime_nsec: u32,
    /// chattr attributes.
    pub attr: u32,
    /// Slot whose orphan dir holds it.
    pub orphaned_slot: u16,
    /// `i_dyn_features`.
    pub dyn_features: u16,
    /// Xattr block.
    pub xattr_loc: u64,
    /// Check.
    pub check: BlockCheck,
    /// Indexed-directory root block.
    pub dx_root: u64,
    /// Refcount tree root.
    pub refcount_loc: u64,
    /// Group it came from (discontiguous groups).
    pub suballoc_loc: u64,
    /// Append-dio orphan slot.
    pub dio_orphaned_slot: u16,
    /// `id1`, raw (see the accessors).
    pub id1: u64,
    /// `id2`.
    pub body: Body,
}

impl Dinode {
    /// A zeroed inode (tests and builders start from this).
    pub fn new() -> Dinode {
        Dinode {
            is_super: false,
            generation: 0,
            suballoc_slot: 0,
            suballoc_bit: 0,
            links_count_hi: 0,
            xattr_inline_size: 0,
            clusters: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mode: 0,
            links_count: 0,
            flags: 0,
            atime: 0,
            ctime: 0,
            mtime: 0,
            dtime: 0,
            blkno: 0,
            last_eb_blk: 0,
            fs_generation: 0,
            atime_nsec: 0,
            ctime_nsec: 0,
            mtime_nsec: 0,
            attr: 0,
            orphaned_slot: 0,
            dyn_features: 0,
            xattr_loc: 0,
            check: BlockCheck::default(),
            dx_root: 0,
            refcount_loc: 0,
            suballoc_loc: 0,
            dio_orphaned_slot: 0,
            id1: 0,
            body: Body::None,
        }
    }

    /// Decodes the inode in `buf`, read from `block`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<Dinode> {
        let d = Decoder::new(buf, block, "dinode");
        let sig = d.bytes(0, 8, "i_signature")?;
        let is_super = sig == SUPER_BLOCK_SIGNATURE;
        if !is_super && sig != INODE_SIGNATURE {
            d.signature(0, INODE_SIGNATURE, "i_signature")?;
        }
        if buf.len() < 512 {
            return Err(d.err(
                "i_signature",
                format!("a {}-byte block is smaller than any inode", buf.len()),
            ));
        }
        let flags = d.le32(0x2C, "i_flags")?;
        let mode = d.le16(0x28, "i_mode")?;
        let dyn_features = d.le16(0x76, "i_dyn_features")?;
        let clusters = d.le32(0x14, "i_clusters")?;
        let id2 = d.sub(ID2_OFFSET, "dinode", "id2")?;
        let body = if is_super || flags & flags::SUPER_BLOCK != 0 {
            Body::Super(SuperBlock::decode(&Decoder::new(
                id2.buf(),
                block,
                "super_block",
            ))?)
        } else if flags & flags::LOCAL_ALLOC != 0 {
            let size = id2.le16(4, "la_size")?;
            Body::LocalAlloc(LocalAlloc {
                bm_off: id2.le32(0, "la_bm_off")?,
                size,
                bitmap: id2.bytes(16, size.into(), "la_bitmap")?.to_vec(),
            })
        } else if flags & flags::CHAIN != 0 {
            Body::Chain(ChainList::decode(&id2.sub(0, "chain_list", "id2")?)?)
        } else if flags & flags::DEALLOC != 0 {
            let count = id2.le16(0, "tl_count")?;
            let used = id2.le16(2, "tl_used")?;
            if usize::from(count) > (id2.buf().len() - 8) / 8 {
                return Err(id2.err("tl_count", format!("{count} records do not fit")));
            }
            if used > count {
                return Err(id2.err("tl_used", format!("{used} is more than tl_count {count}")));
            }
            let mut recs = Vec::new();
            for i in 0..usize::from(used) {
                recs.push(TruncateRec {
                    start: id2.le32(8 + i * 8, "t_start")?,
                    clusters: id2.le32(12 + i * 8, "t_clusters")?,
                });
            }
            Body::TruncateLog(TruncateLog { count, used, recs })
        } else if dyn_features & dyn_features::INLINE_DATA != 0 {
            let count = id2.le16(0, "id_count")?;
            Body::Inline(InlineData {
                count,
                data: id2.bytes(8, count.into(), "id_count")?.to_vec(),
            })
        } else if mode & mode::S_IFMT == mode::S_IFLNK && clusters == 0 {
            let raw = id2.buf();
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Body::FastSymlink(raw[..end].to_vec())
        } else if matches!(
            mode & mode::S_IFMT,
            mode::S_IFCHR | mode::S_IFBLK | mode::S_IFIFO | mode::S_IFSOCK
        ) {
            Body::None
        } else {
            Body::Extents(ExtentList::decode(&id2.sub(
                0,
                "extent_list",
                "id2.i_list",
            )?)?)
        };
        Ok(Dinode {
            is_super,
            generation: d.le32(0x08, "i_generation")?,
            suballoc_slot: d.le16(0x0C, "i_suballoc_slot")?,
            suballoc_bit: d.le16(0x0E, "i_suballoc_bit")?,
            links_count_hi: d.le16(0x10, "i_links_count_hi")?,
            xattr_inline_size: d.le16(0x12, "i_xattr_inline_size")?,
            clusters,
            uid: d.le32(0x18, "i_uid")?,
            gid: d.le32(0x1C, "i_gid")?,
            size: d.le64(0x20, "i_size")?,
            mode,
            links_count: d.le16(0x2A, "i_links_count")?,
            flags,
            atime: d.le64(0x30, "i_atime")?,
            ctime: d.le64(0x38, "i_ctime")?,
            mtime: d.le64(0x40, "i_mtime")?,
            dtime: d.le64(0x48, "i_dtime")?,
            blkno: d.le64(0x50, "i_blkno")?,
            last_eb_blk: d.le64(0x58, "i_last_eb_blk")?,
            fs_generation: d.le32(0x60, "i_fs_generation")?,
            atime_nsec: d.le32(0x64, "i_atime_nsec")?,
            ctime_nsec: d.le32(0x68, "i_ctime_nsec")?,
            mtime_nsec: d.le32(0x6C, "i_mtime_nsec")?,
            attr: d.le32(0x70, "i_attr")?,
            orphaned_slot: d.le16(0x74, "i_orphaned_slot")?,
            dyn_features,
            xattr_loc: d.le64(0x78, "i_xattr_loc")?,
            check: BlockCheck {
                crc32e: d.le32(0x80, "i_check")?,
                ecc: d.le16(0x84, "i_check")?,
            },
            dx_root: d.le64(0x88, "i_dx_root")?,
            refcount_loc: d.le64(0x90, "i_refcount_loc")?,
            suballoc_loc: d.le64(0x98, "i_suballoc_loc")?,
            dio_orphaned_slot: d.le16(0xA0, "i_dio_orphaned_slot")?,
            id1: d.le64(ID1_OFFSET, "id1")?,
            body,
        })
    }

    /// Encodes into a block-sized buffer (check left zero; stamp it after).
    pub fn encode(&self, b: &mut [u8]) {
        put_bytes(
            b,
            0,
            if self.is_super {
                SUPER_BLOCK_SIGNATURE
            } else {
                INODE_SIGNATURE
            },
        );
        put_le32(b, 0x08, self.generation);
        put_le16(b, 0x0C, self.suballoc_slot);
        put_le16(b, 0x0E, self.suballoc_bit);
        put_le16(b, 0x10, self.links_count_hi);
        put_le16(b, 0x12, self.xattr_inline_size);
        put_le32(b, 0x14, self.clusters);
        put_le32(b, 0x18, self.uid);
        put_le32(b, 0x1C, self.gid);
        put_le64(b, 0x20, self.size);
        put_le16(b, 0x28, self.mode);
        put_le16(b, 0x2A, self.links_count);
        put_le32(b, 0x2C, self.flags);
        put_le64(b, 0x30, self.atime);
        put_le64(b, 0x38, self.ctime);
        put_le64(b, 0x40, self.mtime);
        put_le64(b, 0x48, self.dtime);
        put_le64(b, 0x50, self.blkno);
        put_le64(b, 0x58, self.last_eb_blk);
        put_le32(b, 0x60, self.fs_generation);
        put_le32(b, 0x64, self.atime_nsec);
        put_le32(b, 0x68, self.ctime_nsec);
        put_le32(b, 0x6C, self.mtime_nsec);
        put_le32(b, 0x70, self.attr);
        put_le16(b, 0x74, self.orphaned_slot);
        put_le16(b, 0x76, self.dyn_features);
        put_le64(b, 0x78, self.xattr_loc);
        put_le64(b, 0x88, self.dx_root);
        put_le64(b, 0x90, self.refcount_loc);
        put_le64(b, 0x98, self.suballoc_loc);
        put_le16(b, 0xA0, self.dio_orphaned_slot);
        put_le64(b, ID1_OFFSET, self.id1);
        let id2 = &mut b[ID2_OFFSET..];
        match &self.body {
            Body::Super(s) => s.encode(id2),
            Body::LocalAlloc(la) => {
                put_le32(id2, 0, la.bm_off);
                put_le16(id2, 4, la.size);
                put_bytes(id2, 16, &la.bitmap);
            }
            Body::Chain(c) => c.encode(id2),
            Body::TruncateLog(t) => {
                put_le16(id2, 0, t.count);
                put_le16(id2, 2, t.recs.len() as u16);
                for (i, r) in t.recs.iter().enumerate() {
                    put_le32(id2, 8 + i * 8, r.start);
                    put_le32(id2, 12 + i * 8, r.clusters);
                }
            }
            Body::Inline(data) => {
                put_le16(id2, 0, data.count);
                put_bytes(id2, 8, &data.data);
            }
            Body::FastSymlink(t) => put_bytes(id2, 0, t),
            Body::Extents(l) => l.encode(id2),
            Body::None => {}
        }
    }

    /// Link count (both halves).
    pub fn links(&self) -> u32 {
        (u32::from(self.links_count_hi) << 16) | u32::from(self.links_count)
    }
    /// `id1` as bitmap counts: (used, total).
    pub fn bitmap_counts(&self) -> (u32, u32) {
        (self.id1 as u32, (self.id1 >> 32) as u32)
    }
    /// Sets `id1` as bitmap counts.
    pub fn set_bitmap_counts(&mut self, used: u32, total: u32) {
        self.id1 = u64::from(used) | (u64::from(total) << 32);
    }
    /// `id1` as journal flags.
    pub fn journal_flags(&self) -> u32 {
        self.id1 as u32
    }
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFDIR
    }
    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & mode::S_IFMT == mode::S_IFLNK
    }
}

impl Default for Dinode {
    fn default() -> Self {
        Dinode::new()
    }
}

/// Extent records that fit in an inode of `block_size`.
pub fn extent_recs_per_inode(block_size: u32) -> u16 {
    ExtentList::capacity(block_size as usize - ID2_OFFSET)
}
/// Chain records that fit in an inode.
pub fn chain_recs_per_inode(block_size: u32) -> u16 {
    ChainList::capacity(block_size as usize - ID2_OFFSET)
}
/// Truncate records that fit in an inode.
pub fn truncate_recs_per_inode(block_size: u32) -> u16 {
    ((block_size as usize - ID2_OFFSET - 8) / 8) as u16
}
/// Bytes of local alloc bitmap in an inode.
pub fn local_alloc_size(block_size: u32) -> u16 {
    (block_size as usize - ID2_OFFSET - 16) as u16
}
/// Bytes of inline data in an inode without inline xattrs.
pub fn max_inline_data(block_size: u32) -> u16 {
    (block_size as usize - ID2_OFFSET - 8) as u16
}
/// Longest fast symlink target.
pub fn fast_symlink_chars(block_size: u32) -> usize {
    block_size as usize - ID2_OFFSET
}
