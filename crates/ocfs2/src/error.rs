//! Errors of the format layer.
//!
//! Decoding never panics: a block that does not hold what it should turns into a
//! [`DecodeError`] naming the block number, the structure and the field that is
//! wrong. Reading a volume adds I/O and lookup failures ([`Error`]).

use std::fmt;

/// A structure on disk that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Block number the structure was read from.
    pub block: u64,
    /// Structure being decoded, e.g. `dinode`.
    pub structure: &'static str,
    /// Field at fault, e.g. `i_signature`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {}: {}.{}: {}",
            self.block, self.structure, self.field, self.problem
        )
    }
}

impl std::error::Error for DecodeError {}

/// Errors of the volume reader and of mkfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A structure on disk is malformed.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The device could not be read or written.
    #[error("I/O at byte {offset}: {source}")]
    Io {
        /// Byte offset of the failed access.
        offset: u64,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path component does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// A path component that must be a directory is not one.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The volume uses something this code does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// mkfs refuses the options or the device.
    #[error("{0}")]
    Invalid(String),
}

/// Result of decoding one structure.
pub type DecodeResult<T> = std::result::Result<T, DecodeError>;
/// Result of volume operations.
pub type Result<T> = std::result::Result<T, Error>;
