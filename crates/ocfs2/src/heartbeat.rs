//! Disk heartbeat: one sector-sized block per node in the `heartbeat` file.
//!
//! Block `n` of the heartbeat file belongs to node `n`. A live node rewrites its
//! block every two seconds: sequence (`u64`, a timestamp), node number (`u8`),
//! three pad bytes, a CRC32 (`u32`, seed 0, over the whole block with this field
//! zero), a generation (`u64`, random per heartbeat start) and the dead threshold
//! in milliseconds (`u32`). All little-endian. mkfs leaves the region zeroed
//! (256 blocks for the 255 nodes o2cb can have, plus one).

use crate::blockcheck::crc32_le;
use crate::codec::{put_le32, put_le64, put_u8, Decoder};
use crate::error::DecodeResult;

/// Blocks in the heartbeat region mkfs makes.
pub const HEARTBEAT_BLOCKS: u64 = 256;

/// One node's heartbeat block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartbeatBlock {
    /// Sequence (time of the write).
    pub seq: u64,
    /// Node number.
    pub node: u8,
    /// Stored checksum.
    pub cksum: u32,
    /// Generation of the writer.
    pub generation: u64,
    /// Dead threshold (ms).
    pub dead_ms: u32,
}

impl HeartbeatBlock {
    /// Decodes a heartbeat block.
    pub fn decode(buf: &[u8], block: u64) -> DecodeResult<HeartbeatBlock> {
        let d = Decoder::new(buf, block, "heartbeat_block");
        Ok(HeartbeatBlock {
            seq: d.le64(0, "hb_seq")?,
            node: d.u8(8, "hb_node")?,
            cksum: d.le32(12, "hb_cksum")?,
            generation: d.le64(16, "hb_generation")?,
            dead_ms: d.le32(24, "hb_dead_ms")?,
        })
    }

    /// Encodes into a block buffer and fills in the checksum.
    pub fn encode(&self, buf: &mut [u8]) {
        buf.fill(0);
        put_le64(buf, 0, self.seq);
        put_u8(buf, 8, self.node);
        put_le64(buf, 16, self.generation);
        put_le32(buf, 24, self.dead_ms);
        let c = crc32_le(0, buf);
        put_le32(buf, 12, c);
    }

    /// Whether the stored checksum matches `buf`.
    pub fn checksum_ok(buf: &[u8]) -> bool {
        if buf.len() < 28 {
            return false;
        }
        let mut copy = buf.to_vec();
        let stored = u32::from_le_bytes([copy[12], copy[13], copy[14], copy[15]]);
        copy[12..16].fill(0);
        crc32_le(0, &copy) == stored
    }
}
