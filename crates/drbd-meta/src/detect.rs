//! Guessing what a device already holds before create-md writes over its end.
//!
//! drbdmeta reads the first 68 KiB and looks for signatures; so do we, with the
//! same names and size rules (plus OCFS2, which drbdmeta does not know):
//!
//! | what | where | size |
//! |---|---|---|
//! | swap | `SWAP-SPACE`/`SWAPSPACE2` ending at 4 or 8 KiB | refuse always |
//! | LVM2 physical volume | `LVM2` at 0x218 | refuse always (size not probed) |
//! | ext2/3/4 | le16 0xEF53 at 0x438 | le32 blocks at 0x404, block size code at 0x418 |
//! | XFS | be32 `XFSB` at 0 | be32 block size at 4, be64 blocks at 8 |
//! | JFS | `JFS1` at 0x8000 | le64 blocks at 0x8008, le32 block size at 0x8018 |
//! | ReiserFS | `ReIsErFs`/`ReIsEr2Fs` at 0x10034 | le32 blocks at 0x10000, le16 size at 0x1002c |
//! | OCFS2 | `OCFSV2` at 2 blocks of 512..4096 bytes | le32 clusters at +0x14, cluster bits at +0xfc |
//!
//! Anything else non-zero is "some data" of unknown size.

/// drbdmeta's probe window.
pub const PROBE_BYTES: usize = 68 * 1024;

/// What the start of the device looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// The probe window is all zero.
    Nothing,
    /// Something recognizable or not.
    Found(FoundData),
}

/// Something found on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundData {
    /// As drbdmeta names it: `xfs filesystem`, `ext3 filesystem`, `some data`, ...
    pub kind: &'static str,
    /// The space it uses, when known.
    pub extent: DataExtent,
}

/// How much of the device the found data claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataExtent {
    /// Unknown size (plain "some data").
    Unknown,
    /// `blocks` of `block_size` bytes.
    Blocks { blocks: u64, block_size: u64 },
    /// A kind that must never be overwritten (swap, LVM).
    Refuse,
}

impl DataExtent {
    /// Bytes in use, rounded up to KiB, when known.
    pub fn kib(&self) -> Option<u64> {
        match *self {
            DataExtent::Blocks { blocks, block_size } => {
                Some(blocks.saturating_mul(block_size).saturating_add(1023) >> 10)
            }
            _ => None,
        }
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn be32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Classifies the first [`PROBE_BYTES`] of a device (shorter input is padded with
/// zeros). Never panics.
pub fn probe(start: &[u8]) -> Existing {
    let mut b = vec![0u8; PROBE_BYTES];
    let n = start.len().min(PROBE_BYTES);
    b[..n].copy_from_slice(&start[..n]);
    if b.iter().all(|&x| x == 0) {
        return Existing::Nothing;
    }
    let found = |kind, extent| Existing::Found(FoundData { kind, extent });
    for end in [4096usize, 8192] {
        let sig = &b[end - 10..end];
        if sig == b"SWAP-SPACE" || sig == b"SWAPSPACE2" {
            return found("swap space signature", DataExtent::Refuse);
        }
    }
    if &b[0x218..0x21c] == b"LVM2" {
        return found("LVM2 physical volume signature", DataExtent::Refuse);
    }
    if le16(&b, 0x438) == 0xEF53 {
        // drbdmeta tests the journal feature in the first byte of the compat flags.
        let kind = if b[0x45c] & 4 == 4 {
            "ext3 filesystem"
        } else {
            "ext2 filesystem"
        };
        let block_size = match le32(&b, 0x418) {
            0 => 1024,
            1 => 2048,
            _ => 4096,
        };
        return found(
            kind,
            DataExtent::Blocks {
                blocks: le32(&b, 0x404),
                block_size,
            },
        );
    }
    if be32(&b, 0) == 0x5846_5342 {
        return found(
            "xfs filesystem",
            DataExtent::Blocks {
                blocks: be64(&b, 8),
                block_size: be32(&b, 4),
            },
        );
    }
    if &b[0x8000..0x8004] == b"JFS1" {
        return found(
            "JFS filesystem",
            DataExtent::Blocks {
                blocks: le64(&b, 0x8008),
                block_size: le32(&b, 0x8018),
            },
        );
    }
    if &b[0x10034..0x1003c] == b"ReIsErFs" || &b[0x10034..0x1003d] == b"ReIsEr2Fs" {
        return found(
            "reiser filesystem",
            DataExtent::Blocks {
                blocks: le32(&b, 0x10000),
                block_size: le16(&b, 0x1002c),
            },
        );
    }
    for block_size in [512usize, 1024, 2048, 4096] {
        let at = 2 * block_size;
        if &b[at..at + 6] == b"OCFSV2" {
            let bits = le32(&b, at + 0xfc);
            let cluster = if (9..=20).contains(&bits) {
                1u64 << bits
            } else {
                4096
            };
            return found(
                "OCFS2 filesystem",
                DataExtent::Blocks {
                    blocks: le32(&b, at + 0x14),
                    block_size: cluster,
                },
            );
        }
    }
    found("some data", DataExtent::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recognizes_signatures() {
        assert_eq!(probe(&[]), Existing::Nothing);
        let mut xfs = vec![0u8; 4096];
        xfs[0..4].copy_from_slice(b"XFSB");
        xfs[4..8].copy_from_slice(&4096u32.to_be_bytes());
        xfs[8..16].copy_from_slice(&262144u64.to_be_bytes());
        let Existing::Found(f) = probe(&xfs) else {
            panic!()
        };
        assert_eq!((f.kind, f.extent.kib()), ("xfs filesystem", Some(1 << 20)));
        let mut ocfs2 = vec![0u8; 16384];
        ocfs2[8192..8198].copy_from_slice(b"OCFSV2");
        ocfs2[8192 + 0x14..8192 + 0x18].copy_from_slice(&14400u32.to_le_bytes());
        ocfs2[8192 + 0xfc..8192 + 0x100].copy_from_slice(&16u32.to_le_bytes());
        let Existing::Found(f) = probe(&ocfs2) else {
            panic!()
        };
        assert_eq!(
            (f.kind, f.extent.kib()),
            ("OCFS2 filesystem", Some(14400 * 64))
        );
        let Existing::Found(f) = probe(b"hello") else {
            panic!()
        };
        assert_eq!(f.kind, "some data");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn probe_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..70000)) {
            let _ = probe(&bytes);
        }
    }
}
