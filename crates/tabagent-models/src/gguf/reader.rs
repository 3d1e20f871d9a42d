//! A bounded little-endian reader over a buffered source.
//!
//! **Invariant:** the reader never reads or skips past `len`, the file size taken before parsing,
//! even if the source holds more (a file that grew), and it never allocates more than the bytes
//! that are still left before `len`. A source that ends early (a file that shrank) reads as
//! [`Short::Eof`], the same as a claim that runs past `len`.

use std::io::{self, BufRead};

use super::error::GgufError;

/// Why a read came up short; the parser adds what it was reading.
#[derive(Debug)]
pub(crate) enum Short {
    /// The file ends before the requested bytes.
    Eof,
    /// The source failed.
    Io(io::Error),
}

impl From<io::Error> for Short {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Eof
        } else {
            Self::Io(e)
        }
    }
}

/// Adds context to a short read.
pub(crate) trait Context<T> {
    /// Turns [`Short::Eof`] into [`GgufError::Truncated`] naming `what`.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GgufError>;
}

impl<T> Context<T> for Result<T, Short> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GgufError> {
        self.map_err(|short| match short {
            Short::Eof => GgufError::truncated(what()),
            Short::Io(e) => GgufError::Io(e),
        })
    }
}

/// A little-endian reader that knows how many bytes are left.
pub(crate) struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: BufRead> Reader<R> {
    /// Reads `inner` from its start, which must be the start of a file of `len` bytes.
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Self { inner, pos: 0, len }
    }

    /// Bytes consumed so far.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes left before the end of the file.
    pub(crate) fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Short> {
        let n = buf.len() as u64;
        if n > self.remaining() {
            return Err(Short::Eof);
        }
        self.inner.read_exact(buf)?;
        // Cannot overflow: pos + n <= len was checked above.
        self.pos += n;
        Ok(())
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u16`.
    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        self.array().map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }

    /// Reads `n` bytes; fails before allocating if fewer than `n` are left.
    pub(crate) fn bytes(&mut self, n: u64) -> Result<Vec<u8>, Short> {
        if n > self.remaining() {
            return Err(Short::Eof);
        }
        let n = usize::try_from(n).map_err(|_| Short::Eof)?;
        let mut buf = vec![0u8; n];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// Skips `n` bytes without copying them; fails at once if fewer than `n` are left.
    pub(crate) fn skip(&mut self, n: u64) -> Result<(), Short> {
        if n > self.remaining() {
            return Err(Short::Eof);
        }
        let mut left = n;
        while left > 0 {
            let available = match self.inner.fill_buf() {
                Ok(buf) => buf.len(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if available == 0 {
                return Err(Short::Eof);
            }
            let take = usize::try_from(left).map_or(available, |l| l.min(available));
            self.inner.consume(take);
            // Cannot overflow or underflow: take <= left <= remaining.
            left -= take as u64;
            self.pos += take as u64;
        }
        Ok(())
    }
}
