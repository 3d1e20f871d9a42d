//! The librarian against real documents (tests/corpus/documents, made by
//! scripts/make-document-fixtures with Chromium, qpdf, python-docx and odfpy), real PDFium (the
//! pypdfium2 wheel's) and a real memory (SQLite in a temporary folder).

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod extract;
mod library;
mod watch;

use std::path::PathBuf;

/// A required path from the environment; tests fail loudly rather than skip.
pub fn env_path(var: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .unwrap_or_else(|| panic!("{var} is not set; run the tests through scripts/test"));
    PathBuf::from(value)
}

/// A document of the corpus.
pub fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus/documents")
        .join(name)
}

/// An extractor with the wheel's PDFium.
pub fn extractor() -> tabagent_librarian::Extractor {
    tabagent_librarian::Extractor::new(Some(env_path("TABAGENT_TEST_PDFIUM")))
}
