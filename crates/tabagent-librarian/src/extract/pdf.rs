//! PDF text through PDFium, bound once per process to the library the configuration names (the
//! one the `pypdfium2` wheel ships). PDFium is not thread-safe; `pdfium-render`'s `thread_safe`
//! bindings serialise every call.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use pdfium_render::prelude::{
    PdfDocumentMetadataTagType, Pdfium, PdfiumError, PdfiumInternalError,
};

use super::{ExtractError, Extracted, Format, Page};

/// The process's PDFium, or why it could not be bound (kept: binding twice is refused).
static PDFIUM: OnceLock<Result<(PathBuf, Pdfium), String>> = OnceLock::new();
/// Serialises binding, which must happen once.
static BINDING: Mutex<()> = Mutex::new(());

fn pdfium(library: &Path) -> Result<&'static Pdfium, ExtractError> {
    let bound = {
        let _one_at_a_time = BINDING.lock().unwrap_or_else(|e| e.into_inner());
        PDFIUM.get_or_init(|| {
            Pdfium::bind_to_library(library)
                .map(|bindings| (library.to_path_buf(), Pdfium::new(bindings)))
                .map_err(|e| format!("cannot load {}: {e}", library.display()))
        })
    };
    match bound {
        Ok((path, pdfium)) if path == library => Ok(pdfium),
        Ok((path, _)) => Err(ExtractError::NoPdfium(format!(
            "this process already uses {}; one PDFium per process",
            path.display()
        ))),
        Err(e) => Err(ExtractError::NoPdfium(e.clone())),
    }
}

pub(super) fn extract(library: &Path, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let pdfium = pdfium(library)?;
    let document = pdfium
        .load_pdf_from_byte_slice(bytes, None)
        .map_err(|e| match e {
            PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
                ExtractError::Encrypted
            }
            PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
                ExtractError::Encrypted
            }
            other => ExtractError::Malformed(format!("not a readable PDF ({other})")),
        })?;
    let title = document
        .metadata()
        .get(PdfDocumentMetadataTagType::Title)
        .map(|t| t.value().trim().to_string())
        .filter(|t| !t.is_empty());
    let mut pages = Vec::new();
    let mut blank = Vec::new();
    for (index, page) in document.pages().iter().enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let text = page
            .text()
            .map_err(|e| ExtractError::Malformed(format!("page {number}: {e}")))?
            .all();
        if text.trim().is_empty() {
            blank.push(number);
        }
        pages.push(Page {
            number: Some(number),
            text,
        });
    }
    if pages.is_empty() {
        return Err(ExtractError::Empty);
    }
    if blank.len() == pages.len() {
        return Err(ExtractError::NoText { pages: pages.len() });
    }
    let mut warnings = Vec::new();
    if !blank.is_empty() {
        warnings.push(format!(
            "{} page(s) without text (images or scans, not searchable): {}",
            blank.len(),
            list(&blank)
        ));
    }
    Ok(Extracted {
        format: Format::Pdf,
        title,
        pages,
        markdown: false,
        warnings,
    })
}

/// `1, 2, 5` (the first 20, then how many more).
fn list(numbers: &[u32]) -> String {
    let mut shown: Vec<String> = numbers.iter().take(20).map(u32::to_string).collect();
    if numbers.len() > 20 {
        shown.push(format!("and {} more", numbers.len() - 20));
    }
    shown.join(", ")
}
