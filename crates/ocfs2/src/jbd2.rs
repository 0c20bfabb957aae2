//! JBD2 journal blocks (big-endian), as kept in each slot's `journal:NNNN` file.
//!
//! Every journal metadata block starts with a 12-byte header: magic
//! `0xC03B3998`, block type, transaction sequence. Block 0 of the journal file is
//! the superblock (type 4, v2): block size, length in blocks, first log block,
//! expected sequence, start of the log (0 = nothing to replay), errno, feature
//! masks, the volume UUID and user count. A transaction is a descriptor (type 1)
//! listing the home blocks of the logged copies that follow it (tags of 8 bytes,
//! or 12 with the 64-bit feature), revoke blocks (type 5) and a commit block
//! (type 2).

use crate::codec::{put_be32, put_bytes, Decoder};
use crate::error::DecodeResult;

/// Magic of journal blocks.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;
/// Descriptor block.
pub const DESCRIPTOR_BLOCK: u32 = 1;
/// Commit block.
pub const COMMIT_BLOCK: u32 = 2;
/// Superblock v1.
pub const SUPERBLOCK_V1: u32 = 3;
/// Superblock v2.
pub const SUPERBLOCK_V2: u32 = 4;
/// Revoke block.
pub const REVOKE_BLOCK: u32 = 5;
/// Incompat: revoke records.
pub const FEATURE_INCOMPAT_REVOKE: u32 = 0x1;
/// Incompat: 64-bit block numbers.
pub const FEATURE_INCOMPAT_64BIT: u32 = 0x2;
/// Incompat: asynchronous commit.
pub const FEATURE_INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
/// Tag flag: escaped block.
pub const FLAG_ESCAPE: u16 = 1;
/// Tag flag: same UUID as the previous tag (no UUID follows).
pub const FLAG_SAME_UUID: u16 = 2;
/// Tag flag: deleted.
pub const FLAG_DELETED: u16 = 4;
/// Tag flag: last tag of the descriptor.
pub const FLAG_LAST_TAG: u16 = 8;

/// The common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Block type.
    pub blocktype: u32,
    /// Transaction sequence.
    pub sequence: u32,
}

impl Header {
    /// Decodes the header; errors when the magic is wrong.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<Header> {
        let d = Decoder::new(buf, block, "journal_header");
        let magic = d.be32(0, "h_magic")?;
        if magic != JBD2_MAGIC {
            return Err(d.err(
                "h_magic",
                format!("{magic:#010x}, expected {JBD2_MAGIC:#010x}"),
            ));
        }
        let blocktype = d.be32(4, "h_blocktype")?;
        if !(1..=5).contains(&blocktype) {
            return Err(d.err(
                "h_blocktype",
                format!("{blocktype} is not a journal block type"),
            ));
        }
        Ok(Header {
            blocktype,
            sequence: d.be32(8, "h_sequence")?,
        })
    }
    /// Encodes at the start of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        put_be32(buf, 0, JBD2_MAGIC);
        put_be32(buf, 4, self.blocktype);
        put_be32(buf, 8, self.sequence);
    }
}

/// The journal superblock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JournalSuperblock {
    /// Block type (3 or 4).
    pub blocktype: u32,
    /// Journal block size.
    pub blocksize: u32,
    /// Blocks in the journal.
    pub maxlen: u32,
    /// First log block.
    pub first: u32,
    /// First sequence expected.
    pub sequence: u32,
    /// Start of the log (0: clean).
    pub start: u32,
    /// Error.
    pub errno: u32,
    /// Compat features.
    pub feature_compat: u32,
    /// Incompat features.
    pub feature_incompat: u32,
    /// Read-only-compat features.
    pub feature_ro_compat: u32,
    /// UUID (the volume's).
    pub uuid: [u8; 16],
    /// Users.
    pub nr_users: u32,
    /// Dynamic superblock copy.
    pub dynsuper: u32,
    /// Max blocks per transaction.
    pub max_transaction: u32,
    /// Max data blocks per transaction.
    pub max_trans_data: u32,
}

impl JournalSuperblock {
    /// Decodes block 0 of a journal.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<JournalSuperblock> {
        let h = Header::decode(buf, block)?;
        let d = Decoder::new(buf, block, "journal_superblock");
        if h.blocktype != SUPERBLOCK_V1 && h.blocktype != SUPERBLOCK_V2 {
            return Err(d.err(
                "h_blocktype",
                format!("{} is not a superblock type", h.blocktype),
            ));
        }
        let blocksize = d.be32(0x0C, "s_blocksize")?;
        if !(512..=65536).contains(&blocksize) || !blocksize.is_power_of_two() {
            return Err(d.err("s_blocksize", format!("{blocksize} is not a block size")));
        }
        Ok(JournalSuperblock {
            blocktype: h.blocktype,
            blocksize,
            maxlen: d.be32(0x10, "s_maxlen")?,
            first: d.be32(0x14, "s_first")?,
            sequence: d.be32(0x18, "s_sequence")?,
            start: d.be32(0x1C, "s_start")?,
            errno: d.be32(0x20, "s_errno")?,
            feature_compat: d.be32(0x24, "s_feature_compat")?,
            feature_incompat: d.be32(0x28, "s_feature_incompat")?,
            feature_ro_compat: d.be32(0x2C, "s_feature_ro_compat")?,
            uuid: d.fixed(0x30, "s_uuid")?,
            nr_users: d.be32(0x40, "s_nr_users")?,
            dynsuper: d.be32(0x44, "s_dynsuper")?,
            max_transaction: d.be32(0x48, "s_max_transaction")?,
            max_trans_data: d.be32(0x4C, "s_max_trans_data")?,
        })
    }

    /// Encodes into a block buffer (zeroed by the caller).
    pub fn encode(&self, buf: &mut [u8]) {
        Header {
            blocktype: self.blocktype,
            sequence: 0,
        }
        .encode(buf);
        put_be32(buf, 0x0C, self.blocksize);
        put_be32(buf, 0x10, self.maxlen);
        put_be32(buf, 0x14, self.first);
        put_be32(buf, 0x18, self.sequence);
        put_be32(buf, 0x1C, self.start);
        put_be32(buf, 0x20, self.errno);
        put_be32(buf, 0x24, self.feature_compat);
        put_be32(buf, 0x28, self.feature_incompat);
        put_be32(buf, 0x2C, self.feature_ro_compat);
        put_bytes(buf, 0x30, &self.uuid);
        put_be32(buf, 0x40, self.nr_users);
        put_be32(buf, 0x44, self.dynsuper);
        put_be32(buf, 0x48, self.max_transaction);
        put_be32(buf, 0x4C, self.max_trans_data);
    }

    /// Whether the log holds transactions to replay.
    pub fn needs_recovery(&self) -> bool {
        self.start != 0
    }
}

/// One tag of a descriptor block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTag {
    /// Home block of the logged copy.
    pub blocknr: u64,
    /// Flags.
    pub flags: u16,
}

/// A descriptor block: the tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Sequence.
    pub sequence: u32,
    /// Tags, in order.
    pub tags: Vec<BlockTag>,
}

impl Descriptor {
    /// Decodes a descriptor; `wide` when the journal has 64-bit block numbers.
    pub fn decode(buf: &[u8], block: u64, wide: bool) -> DecodeResult<Descriptor> {
        let h = Header::decode(buf, block)?;
        let d = Decoder::new(buf, block, "journal_descriptor");
        if h.blocktype != DESCRIPTOR_BLOCK {
            return Err(d.err(
                "h_blocktype",
                format!("{} is not a descriptor", h.blocktype),
            ));
        }
        let tag_size = if wide { 12 } else { 8 };
        let mut tags = Vec::new();
        let mut off = 12;
        while off + tag_size <= buf.len() {
            let lo = d.be32(off, "t_blocknr")?;
            let flags = d.be16(off + 6, "t_flags")?;
            let hi = if wide {
                d.be32(off + 8, "t_blocknr_high")?
            } else {
                0
            };
            tags.push(BlockTag {
                blocknr: u64::from(lo) | (u64::from(hi) << 32),
                flags,
            });
            off += tag_size;
            if flags & FLAG_SAME_UUID == 0 {
                off += 16;
            }
            if flags & FLAG_LAST_TAG != 0 {
                break;
            }
        }
        Ok(Descriptor {
            sequence: h.sequence,
            tags,
        })
    }
}

/// A commit block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Sequence.
    pub sequence: u32,
    /// Commit time, seconds.
    pub commit_sec: u64,
    /// Commit time, nanoseconds.
    pub commit_nsec: u32,
}

impl Commit {
    /// Decodes a commit block.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<Commit> {
        let h = Header::decode(buf, block)?;
        let d = Decoder::new(buf, block, "journal_commit");
        if h.blocktype != COMMIT_BLOCK {
            return Err(d.err("h_blocktype", format!("{} is not a commit", h.blocktype)));
        }
        Ok(Commit {
            sequence: h.sequence,
            commit_sec: d.be64(0x30, "h_commit_sec")?,
            commit_nsec: d.be32(0x38, "h_commit_nsec")?,
        })
    }
}

/// A revoke block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    /// Sequence.
    pub sequence: u32,
    /// Revoked blocks.
    pub blocks: Vec<u64>,
}

impl Revoke {
    /// Decodes a revoke block.
    pub fn decode(buf: &[u8], block: u64, wide: bool) -> DecodeResult<Revoke> {
        let h = Header::decode(buf, block)?;
        let d = Decoder::new(buf, block, "journal_revoke");
        if h.blocktype != REVOKE_BLOCK {
            return Err(d.err(
                "h_blocktype",
                format!("{} is not a revoke block", h.blocktype),
            ));
        }
        let count = d.be32(12, "r_count")? as usize;
        if count < 16 || count > buf.len() {
            return Err(d.err(
                "r_count",
                format!("{count} bytes is not within 16..={}", buf.len()),
            ));
        }
        let rec = if wide { 8 } else { 4 };
        let mut blocks = Vec::new();
        let mut off = 16;
        while off + rec <= count {
            blocks.push(if wide {
                d.be64(off, "r_blocks")?
            } else {
                u64::from(d.be32(off, "r_blocks")?)
            });
            off += rec;
        }
        Ok(Revoke {
            sequence: h.sequence,
            blocks,
        })
    }
}
