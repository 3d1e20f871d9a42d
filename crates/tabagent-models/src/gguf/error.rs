//! The one error type of GGUF inspection.
//!
//! Every variant is the file's fault except [`GgufError::Open`] and [`GgufError::Io`], which are the
//! file system's. Messages are one line, written for the person who picked the file.

use std::path::PathBuf;

/// Why a GGUF file was rejected.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or its size could not be read.
    #[error("cannot open GGUF file '{}': {source}", path.display())]
    Open {
        /// The path that was given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Reading the file failed for a reason other than reaching its end.
    #[error("cannot read GGUF file: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the `GGUF` magic.
    #[error("not a GGUF file (bad magic)")]
    NotGguf,
    /// The version is neither 2 nor 3.
    #[error("unsupported GGUF version {0} (only versions 2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// The version looks byte-swapped: the file was written big-endian.
    #[error(
        "GGUF version {0:#010x} is implausibly large: the file looks big-endian, \
         only little-endian GGUF files are supported"
    )]
    BigEndian(u32),
    /// The file ends before the structure it announces.
    #[error("GGUF file is truncated while reading {what}")]
    Truncated {
        /// What was being read, with enough context to find it.
        what: String,
    },
    /// A count or length is beyond what this reader accepts.
    #[error("GGUF file exceeds a limit: {what} is {value}, the most accepted is {limit}")]
    LimitExceeded {
        /// What was counted or measured.
        what: String,
        /// The value found in the file.
        value: u64,
        /// The largest value accepted.
        limit: u64,
    },
    /// The file breaks a rule of the GGUF format or of llama.cpp's loader.
    #[error("invalid GGUF file: {what}")]
    Invalid {
        /// The rule that was broken, and where.
        what: String,
    },
}

impl GgufError {
    /// A [`GgufError::Truncated`] for `what`.
    pub(crate) fn truncated(what: impl Into<String>) -> Self {
        Self::Truncated { what: what.into() }
    }

    /// A [`GgufError::Invalid`] for `what`.
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::Invalid { what: what.into() }
    }

    /// A [`GgufError::LimitExceeded`] for `what`.
    pub(crate) fn limit(what: impl Into<String>, value: u64, limit: u64) -> Self {
        Self::LimitExceeded {
            what: what.into(),
            value,
            limit,
        }
    }
}
