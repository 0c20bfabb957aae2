//! Little- and big-endian field access with bounds checks.
//!
//! [`Decoder`] reads fields out of a byte slice and turns every out-of-range
//! access into a [`DecodeError`] naming the block and the field, so decoders are
//! plain sequences of field reads with no indexing that could panic. The `put_*`
//! helpers write fields into buffers the encoder sized itself.

use crate::error::{DecodeError, DecodeResult};

/// Bounds-checked reader of one structure in one block.
#[derive(Clone, Copy)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    block: u64,
    structure: &'static str,
}

impl<'a> Decoder<'a> {
    /// A decoder of `structure` over `buf`, which was read from `block`.
    pub fn new(buf: &'a [u8], block: u64, structure: &'static str) -> Self {
        Decoder {
            buf,
            block,
            structure,
        }
    }

    /// The bytes being decoded.
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Block number the bytes came from.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// A decoder over a sub-range (for embedded structures), same block.
    pub fn sub(
        &self,
        off: usize,
        structure: &'static str,
        field: &'static str,
    ) -> DecodeResult<Self> {
        match self.buf.get(off..) {
            Some(rest) => Ok(Decoder {
                buf: rest,
                block: self.block,
                structure,
            }),
            None => Err(self.err(
                field,
                format!("offset {off} is past the end of {} bytes", self.buf.len()),
            )),
        }
    }

    /// An error about `field` of this structure.
    pub fn err(&self, field: &'static str, problem: impl Into<String>) -> DecodeError {
        DecodeError {
            block: self.block,
            structure: self.structure,
            field,
            problem: problem.into(),
        }
    }

    /// `len` bytes at `off`.
    pub fn bytes(&self, off: usize, len: usize, field: &'static str) -> DecodeResult<&'a [u8]> {
        off.checked_add(len)
            .and_then(|end| self.buf.get(off..end))
            .ok_or_else(|| {
                self.err(
                    field,
                    format!(
                        "bytes {off}..{} lie past the end of {} bytes",
                        off.saturating_add(len),
                        self.buf.len()
                    ),
                )
            })
    }

    fn array<const N: usize>(&self, off: usize, field: &'static str) -> DecodeResult<[u8; N]> {
        let b = self.bytes(off, N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&self, off: usize, field: &'static str) -> DecodeResult<u8> {
        Ok(self.array::<1>(off, field)?[0])
    }
    /// Little-endian u16.
    pub fn le16(&self, off: usize, field: &'static str) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array(off, field)?))
    }
    /// Little-endian u32.
    pub fn le32(&self, off: usize, field: &'static str) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array(off, field)?))
    }
    /// Little-endian u64.
    pub fn le64(&self, off: usize, field: &'static str) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array(off, field)?))
    }
    /// Big-endian u16.
    pub fn be16(&self, off: usize, field: &'static str) -> DecodeResult<u16> {
        Ok(u16::from_be_bytes(self.array(off, field)?))
    }
    /// Big-endian u32.
    pub fn be32(&self, off: usize, field: &'static str) -> DecodeResult<u32> {
        Ok(u32::from_be_bytes(self.array(off, field)?))
    }
    /// Big-endian u64.
    pub fn be64(&self, off: usize, field: &'static str) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.array(off, field)?))
    }
    /// Fixed-size byte array.
    pub fn fixed<const N: usize>(&self, off: usize, field: &'static str) -> DecodeResult<[u8; N]> {
        self.array(off, field)
    }
    /// Checks an 8-byte signature.
    pub fn signature(&self, off: usize, expect: &[u8], field: &'static str) -> DecodeResult<()> {
        let got = self.bytes(off, expect.len(), field)?;
        if got != expect {
            return Err(self.err(
                field,
                format!(
                    "signature {:?}, expected {:?}",
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(expect)
                ),
            ));
        }
        Ok(())
    }
}

/// Writes one byte.
pub fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    buf[off] = v;
}
/// Writes a little-endian u16.
pub fn put_le16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u32.
pub fn put_le32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
/// Writes a little-endian u64.
pub fn put_le64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
/// Writes a big-endian u32.
pub fn put_be32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
/// Writes a big-endian u64.
pub fn put_be64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_be_bytes());
}
/// Writes bytes.
pub fn put_bytes(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

/// Bit `i` of a little-endian bitmap (bit 0 is the low bit of byte 0), as OCFS2
/// numbers allocation bits.
pub fn test_bit(map: &[u8], i: usize) -> bool {
    map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Sets bit `i` of a little-endian bitmap.
pub fn set_bit(map: &mut [u8], i: usize) {
    map[i / 8] |= 1 << (i % 8);
}

/// NUL-terminated (or full-length) string from a fixed field.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
