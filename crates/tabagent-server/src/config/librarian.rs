//! `[librarian]`: documents in the memory: the folders it follows and may read files from, how
//! passages are cut, and the bounds on what one document may be.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The librarian (`/v1/documents`, `tabagent ingest`, followed folders).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LibrarianSettings {
    /// Folders whose documents are kept in the memory, and the only folders `POST /v1/documents`
    /// may name files in.
    pub folders: Vec<PathBuf>,
    /// Follow `folders` while the server runs (a scan at start, then file events): a new or
    /// changed file is read, a deleted one's passages removed.
    pub watch: bool,
    /// PDFium's shared library; unset: `libpdfium.so` next to the executable, in
    /// `<data_dir>/pdfium/`, in `~/.cache/tabagent/pdfium/` (where `scripts/setup` puts the one
    /// from the `pypdfium2` wheel), else the system's.
    pub pdfium_library: Option<PathBuf>,
    /// The most tokens (of the embedding model; characters without one: four per token) one
    /// passage holds.
    pub chunk_tokens: usize,
    /// Tokens a passage repeats from the end of the one before.
    pub chunk_overlap: usize,
    /// The largest file read (an upload is also bounded by this).
    pub max_file_bytes: u64,
    /// The most passages one document may have.
    pub max_chunks: usize,
}

impl Default for LibrarianSettings {
    fn default() -> Self {
        Self {
            folders: Vec::new(),
            watch: true,
            pdfium_library: None,
            chunk_tokens: 200,
            chunk_overlap: 30,
            max_file_bytes: 64 << 20,
            max_chunks: 5_000,
        }
    }
}

impl LibrarianSettings {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.chunk_tokens < 16 || self.chunk_overlap >= self.chunk_tokens / 2 {
            anyhow::bail!(
                "librarian.chunk_tokens must be at least 16 and librarian.chunk_overlap less than half of it"
            );
        }
        if self.max_file_bytes == 0 || !(1..=9_000).contains(&self.max_chunks) {
            anyhow::bail!(
                "librarian.max_file_bytes must be at least 1 and librarian.max_chunks 1 to 9000"
            );
        }
        for folder in &self.folders {
            if !folder.is_absolute() {
                anyhow::bail!(
                    "librarian.folders: `{}` is not an absolute path",
                    folder.display()
                );
            }
        }
        Ok(())
    }
}
