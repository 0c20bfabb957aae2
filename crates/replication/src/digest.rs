//! Block digests for online verify (`verify-alg` in the net section).
//!
//! Two replicas compare a block by its digest instead of its bytes, so verify
//! sends a few bytes per 4 KiB block over the network. The algorithm travels in
//! each verify request (see [`crate::message`]), so the peer needs no
//! configuration of its own.

use md5::Md5;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// The algorithms tandem computes (the names are the kernel crypto API's, as
/// DRBD's `verify-alg` takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyAlg {
    Crc32c,
    Md5,
    Sha1,
    Sha256,
}

impl VerifyAlg {
    pub const ALL: [VerifyAlg; 4] = [
        VerifyAlg::Crc32c,
        VerifyAlg::Md5,
        VerifyAlg::Sha1,
        VerifyAlg::Sha256,
    ];

    /// The algorithm `verify-alg NAME` names, or why not.
    pub fn from_name(name: &str) -> Result<VerifyAlg, String> {
        VerifyAlg::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "verify-alg '{name}' is not supported (tandem computes: {})",
                    VerifyAlg::ALL.map(VerifyAlg::name).join(", ")
                )
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            VerifyAlg::Crc32c => "crc32c",
            VerifyAlg::Md5 => "md5",
            VerifyAlg::Sha1 => "sha1",
            VerifyAlg::Sha256 => "sha256",
        }
    }

    /// The algorithm's number on the wire.
    pub fn code(self) -> u8 {
        match self {
            VerifyAlg::Crc32c => 1,
            VerifyAlg::Md5 => 2,
            VerifyAlg::Sha1 => 3,
            VerifyAlg::Sha256 => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<VerifyAlg> {
        VerifyAlg::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Bytes in one digest.
    pub fn digest_len(self) -> usize {
        match self {
            VerifyAlg::Crc32c => 4,
            VerifyAlg::Md5 => 16,
            VerifyAlg::Sha1 => 20,
            VerifyAlg::Sha256 => 32,
        }
    }

    /// The digest of `data` (`digest_len()` bytes).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            VerifyAlg::Crc32c => crc32c::crc32c(data).to_be_bytes().to_vec(),
            VerifyAlg::Md5 => Md5::digest(data).to_vec(),
            VerifyAlg::Sha1 => Sha1::digest(data).to_vec(),
            VerifyAlg::Sha256 => Sha256::digest(data).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_known_digests() {
        for alg in VerifyAlg::ALL {
            assert_eq!(VerifyAlg::from_name(alg.name()), Ok(alg));
            assert_eq!(VerifyAlg::from_code(alg.code()), Some(alg));
            assert_eq!(alg.digest(b"abc").len(), alg.digest_len());
        }
        assert_eq!(VerifyAlg::from_name("SHA1"), Ok(VerifyAlg::Sha1));
        assert!(VerifyAlg::from_name("whirlpool")
            .unwrap_err()
            .contains("not supported"));
        // Standard test vectors.
        assert_eq!(
            VerifyAlg::Sha1.digest(b"abc"),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
        assert_eq!(
            VerifyAlg::Crc32c.digest(b"123456789"),
            0xe306_9283u32.to_be_bytes()
        );
    }
}
