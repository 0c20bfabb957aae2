//! metaecc: the CRC32 and Hamming code OCFS2 keeps in `ocfs2_block_check`.
//!
//! With the `metaecc` feature every metadata block carries an 8-byte check: a
//! CRC32 (reflected polynomial 0xEDB88320, seed all ones, *no* final inversion)
//! of the whole block computed while the check itself is zero, and a 16-bit
//! Hamming parity of the same bytes. The block's bits are numbered little-endian
//! (bit `i` is bit `i % 8` of byte `i / 8`); data bit `i` gets the Hamming code
//! position obtained by counting from 1 and skipping every power of two, and the
//! parity is the XOR of the positions of all set data bits. On a CRC mismatch the
//! parity of the read block XOR the stored parity is the position of a single
//! flipped data bit, which [`verify_and_correct`] flips back before checking the
//! CRC again; two flips leave a CRC mismatch, which is reported.

use crate::codec::{put_le16, put_le32};

/// Size of `ocfs2_block_check` on disk.
pub const BLOCK_CHECK_SIZE: usize = 8;

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = make_table();

/// Little-endian CRC32 continuing from `crc` (no pre- or post-inversion: pass
/// `!0` to start as OCFS2 does).
pub fn crc32_le(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Hamming code position of data bit `i`: `i + 1` moved up past every power of
/// two (the parity positions).
fn code_bit(i: u32) -> u32 {
    let mut b = i + 1;
    let mut p = 0u32;
    while (1u32 << p) < b + 1 {
        b += 1;
        p += 1;
    }
    b
}

/// Hamming parity of `data`: XOR of the code positions of its set bits.
pub fn hamming_parity(data: &[u8]) -> u32 {
    let mut parity = 0u32;
    // Walk positions incrementally: code positions of consecutive data bits
    // increase by one, skipping powers of two.
    let mut pos = 2u32; // so that the first step lands on 3 = code_bit(0)
    for &byte in data {
        for bit in 0..8 {
            pos += 1;
            while pos.is_power_of_two() {
                pos += 1;
            }
            if byte & (1 << bit) != 0 {
                parity ^= pos;
            }
        }
    }
    parity
}

/// Flips the data bit whose code position is `fix`, if it is one (a syndrome
/// that is a power of two means a parity bit flipped: nothing to do in data).
fn hamming_fix(data: &mut [u8], fix: u32) {
    if fix == 0 || fix.is_power_of_two() {
        return;
    }
    let nbits = (data.len() as u64 * 8).min(u64::from(u32::MAX - 64)) as u32;
    if nbits == 0 || fix >= code_bit(nbits) {
        return;
    }
    // Data bit index for code position `fix`: positions below it minus the
    // parity positions (powers of two) below it, minus one.
    let powers_below = 32 - fix.leading_zeros(); // count of 2^k <= fix, fix not a power
    let i = (fix - powers_below - 1) as usize;
    if let Some(byte) = data.get_mut(i / 8) {
        *byte ^= 1 << (i % 8);
    }
}

/// A decoded block check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockCheck {
    /// CRC32 of the block with the check zeroed.
    pub crc32e: u32,
    /// Hamming parity of the same bytes (16 bits suffice up to 4 KiB blocks).
    pub ecc: u16,
}

impl BlockCheck {
    /// Reads the check at `off` of `block` (no validation).
    pub fn read(block: &[u8], off: usize) -> Option<BlockCheck> {
        let b = block.get(off..off + BLOCK_CHECK_SIZE)?;
        Some(BlockCheck {
            crc32e: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            ecc: u16::from_le_bytes([b[4], b[5]]),
        })
    }
}

/// What [`verify_and_correct`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The CRC matched.
    Good,
    /// One bit was wrong and has been corrected in the buffer.
    Corrected,
}

/// The check of `block` as if the check at `check_off` were zero.
pub fn compute(block: &[u8], check_off: usize) -> BlockCheck {
    let mut copy = block.to_vec();
    if let Some(c) = copy.get_mut(check_off..check_off + BLOCK_CHECK_SIZE) {
        c.fill(0);
    }
    BlockCheck {
        crc32e: crc32_le(!0, &copy),
        ecc: hamming_parity(&copy) as u16,
    }
}

/// Computes the check of `block` and stores it at `check_off`.
pub fn stamp(block: &mut [u8], check_off: usize) {
    block[check_off..check_off + BLOCK_CHECK_SIZE].fill(0);
    let crc = crc32_le(!0, block);
    let ecc = hamming_parity(block) as u16;
    put_le32(block, check_off, crc);
    put_le16(block, check_off + 4, ecc);
}

/// Verifies the check stored at `check_off`, correcting a single flipped bit in
/// place. Returns `Err(stored)` when the block cannot be made to match.
pub fn verify_and_correct(block: &mut [u8], check_off: usize) -> Result<CheckOutcome, BlockCheck> {
    let Some(stored) = BlockCheck::read(block, check_off) else {
        return Err(BlockCheck::default());
    };
    let saved: Vec<u8> = block[check_off..check_off + BLOCK_CHECK_SIZE].to_vec();
    block[check_off..check_off + BLOCK_CHECK_SIZE].fill(0);
    let result = if crc32_le(!0, block) == stored.crc32e {
        Ok(CheckOutcome::Good)
    } else {
        let syndrome = hamming_parity(block) ^ u32::from(stored.ecc);
        let before = block.to_vec();
        hamming_fix(block, syndrome);
        if crc32_le(!0, block) == stored.crc32e {
            Ok(CheckOutcome::Corrected)
        } else {
            block.copy_from_slice(&before);
            Err(stored)
        }
    };
    block[check_off..check_off + BLOCK_CHECK_SIZE].copy_from_slice(&saved);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_positions_skip_powers_of_two() {
        assert_eq!(code_bit(0), 3);
        assert_eq!(code_bit(1), 5);
        assert_eq!(code_bit(3), 7);
        assert_eq!(code_bit(4), 9);
        let mut data = [0u8; 4];
        data[0] = 1;
        assert_eq!(hamming_parity(&data), 3);
        for i in 0..32u32 {
            let mut d = [0u8; 4];
            d[(i / 8) as usize] = 1 << (i % 8);
            assert_eq!(hamming_parity(&d), code_bit(i), "bit {i}");
        }
    }

    #[test]
    fn crc_of_known_string() {
        // Standard CRC-32 of "123456789" is 0xCBF43926 = !crc32_le(!0, ..).
        assert_eq!(!crc32_le(!0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn single_flip_is_corrected_double_detected() {
        for bs in [512usize, 4096] {
            let mut block: Vec<u8> = (0..bs).map(|i| (i * 7 + 3) as u8).collect();
            stamp(&mut block, 16);
            let good = block.clone();
            for bit in [0usize, 1, 100, 8 * 16 + 3, bs * 8 - 1] {
                if (128..192).contains(&bit) {
                    continue;
                }
                let mut b = good.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    verify_and_correct(&mut b, 16),
                    Ok(CheckOutcome::Corrected),
                    "bit {bit}"
                );
                assert_eq!(b, good);
            }
            let mut b = good.clone();
            b[3] ^= 1;
            b[200] ^= 4;
            assert!(verify_and_correct(&mut b, 16).is_err());
            let mut b = good.clone();
            assert_eq!(verify_and_correct(&mut b, 16), Ok(CheckOutcome::Good));
        }
    }
}
