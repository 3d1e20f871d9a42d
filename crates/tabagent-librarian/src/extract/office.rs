//! DOCX and ODT: ZIP containers whose body is XML. The paragraphs' text is read from the body
//! part (`word/document.xml`, `content.xml`); styles, headers and embedded objects are not.

use std::io::{Cursor, Read};

use quick_xml::events::Event;
use quick_xml::Reader;

use super::ExtractError;

/// The most a body part may unpack to: a ZIP bomb is refused, not inflated.
const MAX_BODY_BYTES: u64 = 64 << 20;

/// A DOCX's paragraphs (`w:p`), with tabs (`w:tab`) and breaks (`w:br`, `w:cr`).
pub(super) fn docx(bytes: &[u8]) -> Result<String, ExtractError> {
    let xml = body(bytes, "word/document.xml")?;
    // Only runs' text (`w:t`) is text: field codes (`w:instrText`) and the like are not.
    paragraphs(&xml, false, |name| match name {
        "w:p" => Some(Mark::Paragraph),
        "w:t" => Some(Mark::Text),
        "w:tab" => Some(Mark::Tab),
        "w:br" | "w:cr" => Some(Mark::Break),
        _ => None,
    })
}

/// An ODT's paragraphs and headings (`text:p`, `text:h`), with tabs, line breaks and runs of
/// spaces (`text:s`).
pub(super) fn odt(bytes: &[u8]) -> Result<String, ExtractError> {
    let xml = body(bytes, "content.xml")?;
    paragraphs(&xml, true, |name| match name {
        "text:p" | "text:h" => Some(Mark::Paragraph),
        "text:span" | "text:a" => Some(Mark::Text),
        "text:tab" => Some(Mark::Tab),
        "text:line-break" => Some(Mark::Break),
        "text:s" => Some(Mark::Space),
        _ => None,
    })
}

fn malformed(error: impl std::fmt::Display) -> ExtractError {
    ExtractError::Malformed(format!("bad XML: {error}"))
}

fn body(bytes: &[u8], part: &str) -> Result<String, ExtractError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ExtractError::Malformed(format!("not a ZIP container ({e})")))?;
    let entry = archive.by_name(part).map_err(|e| match e {
        zip::result::ZipError::UnsupportedArchive(m)
            if m.contains("ncrypt") || m.contains("assword") =>
        {
            ExtractError::Encrypted
        }
        _ => ExtractError::Malformed(format!("no {part} in the container")),
    })?;
    if entry.encrypted() {
        return Err(ExtractError::Encrypted);
    }
    let mut xml = String::new();
    entry
        .take(MAX_BODY_BYTES + 1)
        .read_to_string(&mut xml)
        .map_err(|e| ExtractError::Malformed(format!("{part}: {e}")))?;
    if xml.len() as u64 > MAX_BODY_BYTES {
        return Err(ExtractError::Malformed(format!(
            "{part} unpacks to more than {} MiB",
            MAX_BODY_BYTES >> 20
        )));
    }
    Ok(xml)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Ends with a blank line.
    Paragraph,
    /// Holds text (DOCX's runs; ODT's spans, whose paragraphs hold text too).
    Text,
    Tab,
    Break,
    /// ODT's `text:s`: `text:c` spaces (1 when absent).
    Space,
}

/// The text of `xml`'s paragraphs: text counts inside elements marked `Text` (and inside
/// paragraphs when `paragraphs_hold_text`), so the layout's whitespace between elements does not.
fn paragraphs(
    xml: &str,
    paragraphs_hold_text: bool,
    mark: impl Fn(&str) -> Option<Mark>,
) -> Result<String, ExtractError> {
    let mut reader = Reader::from_str(xml);
    let mut out = String::new();
    let holds_text = |m: Option<Mark>| {
        m == Some(Mark::Text) || (paragraphs_hold_text && m == Some(Mark::Paragraph))
    };
    // How many text-holding elements enclose the reader.
    let mut inside = 0usize;
    loop {
        match reader.read_event().map_err(malformed)? {
            Event::Start(element) if holds_text(mark(element.name().as_ref())) => {
                inside += 1;
            }
            Event::Text(text) if inside > 0 => {
                out.push_str(&text.xml10_content());
            }
            Event::CData(text) if inside > 0 => {
                out.push_str(&text.into_inner());
            }
            Event::GeneralRef(reference) if inside > 0 => {
                if let Some(c) = reference.resolve_char_ref().map_err(malformed)? {
                    out.push(c);
                } else {
                    let name = reference.xml10_content();
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => out.push_str(s),
                        None => return Err(malformed(format!("unknown entity &{name};"))),
                    }
                }
            }
            Event::Empty(element) => match mark(element.name().as_ref()) {
                Some(Mark::Tab) => out.push('\t'),
                Some(Mark::Break) => out.push('\n'),
                Some(Mark::Paragraph) => out.push_str("\n\n"),
                Some(Mark::Space) => {
                    let count = element
                        .try_get_attribute("text:c")
                        .ok()
                        .flatten()
                        .and_then(|a| a.value.parse::<usize>().ok())
                        .unwrap_or(1)
                        .min(1024);
                    out.extend(std::iter::repeat_n(' ', count));
                }
                Some(Mark::Text) | None => {}
            },
            Event::End(element) => {
                let m = mark(element.name().as_ref());
                if holds_text(m) {
                    inside = inside.saturating_sub(1);
                }
                if m == Some(Mark::Paragraph) {
                    out.push_str("\n\n");
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}
