//! Passages for the memory: each page's text cut along Markdown headings (where the text is
//! Markdown), paragraphs, sentences and words, as large as the embedding model takes, with an
//! overlap so that a sentence cut at a border is whole in one of the two passages. A passage
//! never spans pages, so its citation is one page and one character range.

use std::sync::Arc;

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

use crate::extract::Extracted;

/// How long a text is in the embedding model's tokens.
pub trait TokenCounter: Send + Sync {
    /// Tokens `text` takes (without the model's special tokens).
    fn count(&self, text: &str) -> usize;
}

/// Counts characters: the measure when no embedding model is configured.
#[derive(Debug, Clone, Copy)]
pub struct Characters;

impl TokenCounter for Characters {
    fn count(&self, text: &str) -> usize {
        text.chars().count()
    }
}

struct Sizer(Arc<dyn TokenCounter>);

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// A passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The page it is on (from 1), for formats with pages.
    pub page: Option<u32>,
    /// Its first character within the page's text (the document's, without pages).
    pub start: usize,
    /// One past its last character.
    pub end: usize,
    /// Its text.
    pub text: String,
}

/// Cuts documents into passages.
#[derive(Clone)]
pub struct Chunker {
    counter: Arc<dyn TokenCounter>,
    max: usize,
    overlap: usize,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("max", &self.max)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

/// Why a chunker cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("a passage of at most {max} with an overlap of {overlap} cannot be cut: the overlap must be smaller")]
pub struct ChunkerError {
    max: usize,
    overlap: usize,
}

impl Chunker {
    /// Passages of at most `max` units of `counter` (tokens of the embedding model), the next
    /// beginning up to `overlap` units before the previous one ends.
    pub fn new(
        counter: Arc<dyn TokenCounter>,
        max: usize,
        overlap: usize,
    ) -> Result<Self, ChunkerError> {
        if max == 0 || overlap >= max {
            return Err(ChunkerError { max, overlap });
        }
        Ok(Self {
            counter,
            max,
            overlap,
        })
    }

    /// Passages by characters, for a memory without an embedding model.
    pub fn by_characters() -> Self {
        Self {
            counter: Arc::new(Characters),
            max: 1200,
            overlap: 150,
        }
    }

    /// `document`'s passages, page by page, in order.
    pub fn chunks(&self, document: &Extracted) -> Vec<Chunk> {
        // A range lets a passage end at a better boundary (a paragraph) before it is full.
        let config = || {
            ChunkConfig::new((self.max * 3 / 4).max(1)..self.max)
                .with_overlap(self.overlap)
                .map(|c| c.with_sizer(Sizer(Arc::clone(&self.counter))))
        };
        let Ok(config) = config() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if document.markdown {
            let splitter = MarkdownSplitter::new(config);
            for page in &document.pages {
                collect(
                    &mut out,
                    page.number,
                    splitter.chunk_char_indices(&page.text),
                );
            }
        } else {
            let splitter = TextSplitter::new(config);
            for page in &document.pages {
                collect(
                    &mut out,
                    page.number,
                    splitter.chunk_char_indices(&page.text),
                );
            }
        }
        out
    }
}

fn collect<'a>(
    out: &mut Vec<Chunk>,
    page: Option<u32>,
    pieces: impl Iterator<Item = text_splitter::ChunkCharIndex<'a>>,
) {
    for piece in pieces {
        if piece.chunk.trim().is_empty() {
            continue;
        }
        out.push(Chunk {
            page,
            start: piece.char_offset,
            end: piece.char_offset + piece.chunk.chars().count(),
            text: piece.chunk.to_string(),
        });
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::extract::{Format, Page};

    /// Words as tokens: enough to see that sizes and overlaps are in the counter's units.
    struct Words;
    impl TokenCounter for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    fn document(pages: &[&str], markdown: bool) -> Extracted {
        Extracted {
            format: if markdown {
                Format::Markdown
            } else {
                Format::Pdf
            },
            title: None,
            pages: pages
                .iter()
                .enumerate()
                .map(|(i, t)| Page {
                    number: (!markdown).then_some(i as u32 + 1),
                    text: t.to_string(),
                })
                .collect(),
            markdown,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn passages_fit_cite_their_page_and_range_and_overlap() {
        // Sentences shorter than the overlap: whole ones are repeated (the splitter overlaps by
        // whole units of the level it cut at).
        let page_two: Vec<String> = (0..60).map(|i| format!("Fox number {i} jumps.")).collect();
        let page_two = page_two.join(" ");
        let chunker = Chunker::new(Arc::new(Words), 40, 10).unwrap_or_else(|e| panic!("{e}"));
        let doc = document(&["A short first page.", &page_two], false);
        let chunks = chunker.chunks(&doc);
        assert_eq!(chunks[0].page, Some(1));
        assert_eq!(chunks[0].text, "A short first page.");
        let second: Vec<&Chunk> = chunks.iter().filter(|c| c.page == Some(2)).collect();
        assert!(second.len() >= 10, "{} passages", second.len());
        for c in &chunks {
            assert!(Words.count(&c.text) <= 40, "{:?}", c.text);
            let page = &doc.pages[c.page.unwrap_or(1) as usize - 1].text;
            let cited: String = page.chars().skip(c.start).take(c.end - c.start).collect();
            assert_eq!(cited, c.text, "the range cites the passage's own text");
        }
        // Each passage starts before the previous one ends: a sentence cut at a border is whole
        // in one of the two.
        for pair in second.windows(2) {
            assert!(
                pair[1].start < pair[0].end,
                "{:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn markdown_is_cut_at_headings_before_paragraphs() {
        let text = "# Cats\n\nCats purr and sleep all day long in the sun.\n\n# Dogs\n\nDogs bark at the mail carrier every single morning.";
        let chunker = Chunker::new(Arc::new(Words), 14, 2).unwrap_or_else(|e| panic!("{e}"));
        let chunks = chunker.chunks(&document(&[text], true));
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert!(chunks[0].text.starts_with("# Cats") && !chunks[0].text.contains("Dogs"));
        assert!(chunks[1].text.starts_with("# Dogs"));
        assert_eq!(chunks[1].page, None);
    }

    #[test]
    fn an_overlap_as_large_as_a_passage_is_refused() {
        assert!(Chunker::new(Arc::new(Characters), 100, 100).is_err());
        assert!(Chunker::new(Arc::new(Characters), 0, 0).is_err());
    }
}
