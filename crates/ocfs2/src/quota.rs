//! Quota files: the global files (`aquota.user`, `aquota.group`) and each slot's
//! local files (`aquota.user:NNNN`, ...).
//!
//! Every quota block ends in an 8-byte reserved area holding the block's metaecc
//! check. Block 0 of every quota file starts with a magic and a version; the
//! global file follows with grace times, the sync interval, its block count and
//! the heads of its free lists, and then keeps one 88-byte record per user or
//! group in the radix tree of the generic quota format (tree blocks of `u32`
//! block references, the root at block 1, four levels indexed by the bytes of
//! the id, data blocks starting with a 16-byte header). A local file follows its
//! header with flags, chunk count and block count; each chunk is a bitmap block
//! (free count, then the bitmap) followed by data blocks of 24-byte records of
//! pending changes.

use crate::codec::{put_le16, put_le32, put_le64, Decoder};
use crate::error::DecodeResult;

/// Magic of the global user quota file.
pub const GLOBAL_USR_MAGIC: u32 = 0x0cf5_2470;
/// Magic of the global group quota file.
pub const GLOBAL_GRP_MAGIC: u32 = 0x0cf5_2471;
/// Magic of a local user quota file.
pub const LOCAL_USR_MAGIC: u32 = 0x0cf5_24c0;
/// Magic of a local group quota file.
pub const LOCAL_GRP_MAGIC: u32 = 0x0cf5_24c1;
/// Bytes reserved at the end of each quota block (for the check).
pub const QBLK_RESERVED_SPACE: usize = 8;
/// Local flag: the file is clean.
pub const OLQF_CLEAN: u32 = 0x0001;
/// Size of one global record.
pub const GLOBAL_DQBLK_SIZE: usize = 0x58;
/// Size of the data block header of the quota tree.
pub const DQDB_HEADER_SIZE: usize = 16;
/// Depth of the quota radix tree.
pub const QT_TREEDEPTH: usize = 4;
/// Block of the tree root.
pub const QT_TREEOFF: u32 = 1;
/// Default block grace (seconds).
pub const DEF_BLOCK_GRACE: u32 = 604_800;
/// Default inode grace (seconds).
pub const DEF_INODE_GRACE: u32 = 604_800;
/// Default sync interval (ms).
pub const DEF_QUOTA_SYNC: u32 = 10_000;

/// Header of every quota file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskDqHeader {
    /// Magic.
    pub magic: u32,
    /// Version.
    pub version: u32,
}

impl DiskDqHeader {
    /// Decodes the header at the start of block 0.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<DiskDqHeader> {
        let d = Decoder::new(buf, block, "quota_header");
        let magic = d.le32(0, "dqh_magic")?;
        if ![
            GLOBAL_USR_MAGIC,
            GLOBAL_GRP_MAGIC,
            LOCAL_USR_MAGIC,
            LOCAL_GRP_MAGIC,
        ]
        .contains(&magic)
        {
            return Err(d.err(
                "dqh_magic",
                format!("{magic:#x} is not an ocfs2 quota magic"),
            ));
        }
        Ok(DiskDqHeader {
            magic,
            version: d.le32(4, "dqh_version")?,
        })
    }
}

/// Information of a global quota file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalDqInfo {
    /// Block grace time.
    pub bgrace: u32,
    /// Inode grace time.
    pub igrace: u32,
    /// Sync interval (ms).
    pub syncms: u32,
    /// Blocks in the file.
    pub blocks: u32,
    /// First free block.
    pub free_blk: u32,
    /// First block with a free entry.
    pub free_entry: u32,
}

impl GlobalDqInfo {
    /// Decodes the info after the header of block 0.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<GlobalDqInfo> {
        let d = Decoder::new(buf, block, "global_dqinfo");
        Ok(GlobalDqInfo {
            bgrace: d.le32(8, "dqi_bgrace")?,
            igrace: d.le32(12, "dqi_igrace")?,
            syncms: d.le32(16, "dqi_syncms")?,
            blocks: d.le32(20, "dqi_blocks")?,
            free_blk: d.le32(24, "dqi_free_blk")?,
            free_entry: d.le32(28, "dqi_free_entry")?,
        })
    }
    /// Encodes header and info into block 0.
    pub fn encode(&self, magic: u32, buf: &mut [u8]) {
        put_le32(buf, 0, magic);
        put_le32(buf, 4, 0);
        put_le32(buf, 8, self.bgrace);
        put_le32(buf, 12, self.igrace);
        put_le32(buf, 16, self.syncms);
        put_le32(buf, 20, self.blocks);
        put_le32(buf, 24, self.free_blk);
        put_le32(buf, 28, self.free_entry);
    }
}

/// Information of a local quota file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalDqInfo {
    /// Flags.
    pub flags: u32,
    /// Chunks.
    pub chunks: u32,
    /// Blocks.
    pub blocks: u32,
}

impl LocalDqInfo {
    /// Decodes the info after the header of block 0.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<LocalDqInfo> {
        let d = Decoder::new(buf, block, "local_dqinfo");
        Ok(LocalDqInfo {
            flags: d.le32(8, "dqi_flags")?,
            chunks: d.le32(12, "dqi_chunks")?,
            blocks: d.le32(16, "dqi_blocks")?,
        })
    }
    /// Encodes header and info into block 0.
    pub fn encode(&self, magic: u32, buf: &mut [u8]) {
        put_le32(buf, 0, magic);
        put_le32(buf, 4, 0);
        put_le32(buf, 8, self.flags);
        put_le32(buf, 12, self.chunks);
        put_le32(buf, 16, self.blocks);
    }
}

/// One user's or group's record in the global file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalDqBlk {
    /// Id.
    pub id: u32,
    /// Nodes referencing it.
    pub use_count: u32,
    /// Inode hard limit.
    pub ihardlimit: u64,
    /// Inode soft limit.
    pub isoftlimit: u64,
    /// Inodes in use.
    pub curinodes: u64,
    /// Space hard limit.
    pub bhardlimit: u64,
    /// Space soft limit.
    pub bsoftlimit: u64,
    /// Bytes in use.
    pub curspace: u64,
    /// Space grace deadline.
    pub btime: u64,
    /// Inode grace deadline.
    pub itime: u64,
}

impl GlobalDqBlk {
    /// Decodes a record at the start of `buf`.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<GlobalDqBlk> {
        let d = Decoder::new(buf, block, "global_dqblk");
        Ok(GlobalDqBlk {
            id: d.le32(0, "dqb_id")?,
            use_count: d.le32(4, "dqb_use_count")?,
            ihardlimit: d.le64(8, "dqb_ihardlimit")?,
            isoftlimit: d.le64(0x10, "dqb_isoftlimit")?,
            curinodes: d.le64(0x18, "dqb_curinodes")?,
            bhardlimit: d.le64(0x20, "dqb_bhardlimit")?,
            bsoftlimit: d.le64(0x28, "dqb_bsoftlimit")?,
            curspace: d.le64(0x30, "dqb_curspace")?,
            btime: d.le64(0x38, "dqb_btime")?,
            itime: d.le64(0x40, "dqb_itime")?,
        })
    }
    /// Encodes at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        put_le32(buf, 0, self.id);
        put_le32(buf, 4, self.use_count);
        put_le64(buf, 8, self.ihardlimit);
        put_le64(buf, 0x10, self.isoftlimit);
        put_le64(buf, 0x18, self.curinodes);
        put_le64(buf, 0x20, self.bhardlimit);
        put_le64(buf, 0x28, self.bsoftlimit);
        put_le64(buf, 0x30, self.curspace);
        put_le64(buf, 0x38, self.btime);
        put_le64(buf, 0x40, self.itime);
    }
}

/// Header of a data block of the quota tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DqDbHeader {
    /// Next block with free entries.
    pub next_free: u32,
    /// Previous block with free entries.
    pub prev_free: u32,
    /// Entries in use.
    pub entries: u16,
}

impl DqDbHeader {
    /// Decodes the header at the start of a data block.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<DqDbHeader> {
        let d = Decoder::new(buf, block, "qt_disk_dqdbheader");
        Ok(DqDbHeader {
            next_free: d.le32(0, "dqdh_next_free")?,
            prev_free: d.le32(4, "dqdh_prev_free")?,
            entries: d.le16(8, "dqdh_entries")?,
        })
    }
    /// Encodes at the start of a data block.
    pub fn encode(&self, buf: &mut [u8]) {
        put_le32(buf, 0, self.next_free);
        put_le32(buf, 4, self.prev_free);
        put_le16(buf, 8, self.entries);
    }
}

/// A local chunk header: free entries, then the bitmap.
pub fn decode_chunk_free(buf: &[u8], block: u64) -> DecodeResult<u32> {
    Decoder::new(buf, block, "local_disk_chunk").le32(0, "dqc_free")
}

/// Offset of the check in a quota block of `block_size` bytes.
pub fn trailer_offset(block_size: usize) -> usize {
    block_size - QBLK_RESERVED_SPACE
}
