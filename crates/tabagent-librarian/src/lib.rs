//! The librarian: documents in, passages with citations out.
//!
//! - [`extract`]: a document's text, page by page where it has pages, from PDF (PDFium, bound at
//!   run time), HTML (the readable part), Markdown, plain text, DOCX and ODT.
//! - [`chunk`]: passages sized by the embedding model's tokenizer, along headings, paragraphs and
//!   sentences, with overlap, each knowing its page and character range.
//! - [`library`]: documents kept in the memory: one `meta` record per document, one `knowledge`
//!   record per distinct passage citing every document, page and range it appears at; a changed
//!   document's passages replaced in one transaction, an unchanged one left alone, a removed one's
//!   passages removed.
//! - [`watch`]: folders whose files the library follows (a scan at start, then inotify).

pub mod chunk;
pub mod extract;
pub mod library;
pub mod watch;

pub use chunk::{Chunk, Chunker, TokenCounter};
pub use extract::{ExtractError, Extracted, Extractor, Format, Page};
pub use library::{
    citations, sources, Citation, DocumentInfo, DocumentSource, DocumentStatus, Embedder,
    EmbedderError, IngestError, IngestOutcome, Library, Source,
};
pub use watch::{follow, Following, Noticed};
