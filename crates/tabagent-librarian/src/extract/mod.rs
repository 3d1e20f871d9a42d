//! Text out of documents. Each format has its proven extractor: PDFium for PDF (loaded at run
//! time from a library the caller names), Mozilla's readability (`dom_smoothie`) for HTML, the
//! ZIP container and its XML for DOCX and ODT; Markdown and plain text are read as they are.

mod html;
mod office;
mod pdf;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A document format the librarian reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Portable Document Format: text by page.
    Pdf,
    /// A web page: its readable part, as Markdown.
    Html,
    /// Markdown: chunked along its headings.
    Markdown,
    /// Plain text (UTF-8).
    Text,
    /// Office Open XML word processing.
    Docx,
    /// OpenDocument text.
    Odt,
}

impl Format {
    /// The format a file's name and first bytes say; `None` for one the librarian does not read.
    pub fn detect(name: &str, bytes: &[u8]) -> Option<Format> {
        let extension = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let by_name = match extension.as_deref() {
            Some("pdf") => Some(Format::Pdf),
            Some("html" | "htm" | "xhtml") => Some(Format::Html),
            Some("md" | "markdown" | "mdown" | "mkd") => Some(Format::Markdown),
            Some("txt" | "text" | "rst" | "org" | "csv" | "log") => Some(Format::Text),
            Some("docx") => Some(Format::Docx),
            Some("odt") => Some(Format::Odt),
            _ => None,
        };
        // The content has the last word where it is unambiguous: a PDF named `.txt` is a PDF.
        if bytes.starts_with(b"%PDF-") {
            return Some(Format::Pdf);
        }
        if by_name.is_some() {
            return by_name;
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
        let head = head.trim_start();
        if head.starts_with("<!doctype html") || head.starts_with("<html") {
            return Some(Format::Html);
        }
        None
    }

    /// Whether a file with this name is one the librarian would read (by its extension alone:
    /// what a folder scan uses to skip files without opening them).
    pub fn known_extension(name: &str) -> bool {
        Self::detect(name, &[]).is_some()
    }

    /// The format's name as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Html => "html",
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Docx => "docx",
            Format::Odt => "odt",
        }
    }
}

/// One page of a document (the whole text when the format has no pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its number, from 1; `None` for formats without pages.
    pub number: Option<u32>,
    /// Its text.
    pub text: String,
}

/// A document's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// What it was.
    pub format: Format,
    /// Its title, when it names one.
    pub title: Option<String>,
    /// Its pages in order.
    pub pages: Vec<Page>,
    /// Whether its text is Markdown (chunked along its headings).
    pub markdown: bool,
    /// What was odd but not fatal (pages without text, ...).
    pub warnings: Vec<String>,
}

impl Extracted {
    /// Characters of text over all pages.
    pub fn chars(&self) -> usize {
        self.pages.iter().map(|p| p.text.chars().count()).sum()
    }
}

/// Why a document's text could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Not a format the librarian reads.
    #[error("unsupported document format: the librarian reads PDF, HTML, Markdown, plain text, DOCX and ODT")]
    Unsupported,
    /// A password protects it.
    #[error("the document is encrypted (password protected); decrypt it first")]
    Encrypted,
    /// Its pages hold no text layer (scanned images).
    #[error("the document has no text layer ({pages} page(s) of images, as a scan has); run OCR on it first")]
    NoText {
        /// Its pages.
        pages: usize,
    },
    /// It holds no text at all.
    #[error("the document holds no text")]
    Empty,
    /// Broken or not what its name says.
    #[error("the document cannot be read: {0}")]
    Malformed(String),
    /// PDF support is not available.
    #[error("PDF support needs PDFium's library: {0}")]
    NoPdfium(String),
}

/// Extracts text, holding what the formats need (PDFium, when it is found).
#[derive(Debug, Clone, Default)]
pub struct Extractor {
    pdfium: Option<PathBuf>,
}

impl Extractor {
    /// An extractor reading PDFs with the PDFium library at `pdfium` (loaded on the first PDF);
    /// `None`: PDFs are refused with [`ExtractError::NoPdfium`].
    pub fn new(pdfium: Option<PathBuf>) -> Self {
        Self { pdfium }
    }

    /// `bytes`' text as `format`. Blocking (PDF parsing takes a while): call it off async threads.
    pub fn extract(&self, format: Format, bytes: &[u8]) -> Result<Extracted, ExtractError> {
        let mut extracted = match format {
            Format::Pdf => {
                let Some(library) = &self.pdfium else {
                    return Err(ExtractError::NoPdfium(
                        "no libpdfium configured (librarian.pdfium_library)".into(),
                    ));
                };
                pdf::extract(library, bytes)?
            }
            Format::Html => html::extract(&utf8(bytes)?),
            Format::Markdown => whole(format, None, utf8(bytes)?, true),
            Format::Text => whole(format, None, utf8(bytes)?, false),
            Format::Docx => whole(format, None, office::docx(bytes)?, false),
            Format::Odt => whole(format, None, office::odt(bytes)?, false),
        };
        for page in &mut extracted.pages {
            page.text = tidy(&page.text);
        }
        if extracted.pages.iter().all(|p| p.text.trim().is_empty()) {
            return Err(ExtractError::Empty);
        }
        Ok(extracted)
    }
}

fn whole(format: Format, title: Option<String>, text: String, markdown: bool) -> Extracted {
    Extracted {
        format,
        title,
        pages: vec![Page { number: None, text }],
        markdown,
        warnings: Vec::new(),
    }
}

/// Text as UTF-8 (a byte-order mark dropped); other encodings are refused, not guessed.
fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ExtractError::Malformed(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Line endings as `\n`, at most one blank line in a row, NULs and other control characters (but tabs and line breaks) gone,
/// trailing spaces cut: what the chunker and the search index see.
fn tidy(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split('\n') {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim_end();
        // One blank line separates paragraphs; more say nothing more.
        blank_run = if line.is_empty() { blank_run + 1 } else { 0 };
        if blank_run > 1 {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_known_by_name_and_pdf_by_content() {
        assert_eq!(
            Format::detect("a/b/Notes.MD", b"# x"),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::detect("report.txt", b"%PDF-1.7\n"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::detect("page", b"  <!DOCTYPE html><html>"),
            Some(Format::Html)
        );
        assert_eq!(Format::detect("photo.jpg", b"\xFF\xD8\xFF"), None);
        assert!(!Format::known_extension("archive.tar.gz"));
    }

    #[test]
    fn text_is_tidied_and_non_utf8_refused() {
        let extractor = Extractor::default();
        let got = extractor
            .extract(
                Format::Text,
                b"\xEF\xBB\xBFone  \r\ntwo\x00\r\n\n\n\nthree\n\n",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.pages[0].text, "one\ntwo\n\nthree");
        assert!(matches!(
            extractor.extract(Format::Text, b"caf\xE9"),
            Err(ExtractError::Malformed(_))
        ));
        assert!(matches!(
            extractor.extract(Format::Markdown, b" \n\n"),
            Err(ExtractError::Empty)
        ));
        assert!(matches!(
            extractor.extract(Format::Pdf, b"%PDF-1.4"),
            Err(ExtractError::NoPdfium(_))
        ));
    }
}
