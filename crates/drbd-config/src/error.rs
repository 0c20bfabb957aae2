//! The one error type of this crate: where (file, line, column) and what.

use std::fmt;
use std::path::PathBuf;

/// Exit status drbdadm uses for an invalid configuration.
pub const EXIT_CONFIG_INVALID: i32 = 10;
/// Exit status drbdadm uses for usage errors (e.g. an unknown resource).
pub const EXIT_USAGE: i32 = 1;
/// Exit status drbdadm uses when a file cannot be opened or read.
pub const EXIT_EXEC_ERROR: i32 = 20;

/// What went wrong, coarsely; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is malformed or inconsistent.
    Config,
    /// A request that the configuration cannot answer (unknown resource).
    Usage,
    /// A file could not be read.
    Io,
}

/// An error with its position: displayed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// The file as drbdadm would name it (relative includes stay relative).
    pub file: PathBuf,
    /// 1-based line (0 when drbdadm itself reports line 0).
    pub line: u32,
    /// 1-based column in bytes.
    pub col: u32,
    pub message: String,
}

impl Error {
    pub(crate) fn config(
        file: impl Into<PathBuf>,
        line: u32,
        col: u32,
        message: impl Into<String>,
    ) -> Self {
        Error {
            kind: ErrorKind::Config,
            file: file.into(),
            line,
            col,
            message: message.into(),
        }
    }

    /// The exit status drbdadm uses for this kind of error.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Config => EXIT_CONFIG_INVALID,
            ErrorKind::Usage => EXIT_USAGE,
            ErrorKind::Io => EXIT_CONFIG_INVALID,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for Error {}
