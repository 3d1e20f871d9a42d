//! Documents kept in the memory.
//!
//! A document is one `meta` record (kind `document`, key `document:<id>`) describing it: where
//! it came from, its content hash, format, pages and passages, or why it could not be read. Its
//! passages are `knowledge` records (kind `chunk`, key `chunk:<hash of the text>`), each with
//! its vector and the citations of every document, page and character range it appears at:
//! a passage two documents share is stored once, tagged `doc:<id>` for each.
//!
//! Every change to a document (its record, the passages it adds, re-cites or leaves) is one
//! memory transaction: after a crash the memory holds the document as it was or as it is, never
//! half. Changes go one at a time through the library, so two never interleave their reads and
//! writes of a shared passage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tabagent_memory::record::MAX_PAGE;
use tabagent_memory::{
    Change, Embedding, Filter, MemoryApi, MemoryError, NewRecord, Order, Record, Store,
};

use crate::chunk::{Chunk, Chunker};
use crate::extract::{ExtractError, Extracted, Extractor, Format};

/// The kind of a document's record (in `meta`) and of its passages (in `knowledge`).
pub const DOCUMENT_KIND: &str = "document";
/// The kind of a passage's record.
pub const CHUNK_KIND: &str = "chunk";
/// Vectors embedded in one call.
const EMBED_BATCH: usize = 32;
/// Documents citing one shared passage record at most (a record's tags are capped); a passage
/// in more documents gets another record.
const MAX_CITING_DOCUMENTS: usize = 48;

/// Vectors for passages.
pub trait Embedder: Send + Sync {
    /// The vector space (the embedding model's name).
    fn space(&self) -> &str;
    /// One vector per text, in order.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedderError>>;
}

/// Why texts could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EmbedderError(pub String);

/// Where a document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentSource {
    /// A file (an absolute path): the same path is the same document, changed or not.
    File(PathBuf),
    /// Bytes a client sent, named: the same content sent again is the same document.
    Upload {
        /// The file name the client gave.
        name: String,
    },
}

impl DocumentSource {
    fn record_source(&self) -> String {
        match self {
            DocumentSource::File(path) => format!("file:{}", path.display()),
            DocumentSource::Upload { name } => format!("upload:{name}"),
        }
    }

    fn name(&self) -> String {
        match self {
            DocumentSource::File(path) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            DocumentSource::Upload { name } => name.clone(),
        }
    }
}

/// Whether a document's passages are in the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Read, chunked and searchable.
    Ready,
    /// Could not be read; `error` says why (a file is kept as failed so that a folder's listing
    /// shows it, and is tried again when it changes).
    Failed,
}

/// A document as the library keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// Its id (`doc_` and 16 hex digits).
    pub id: String,
    /// Its file name.
    pub name: String,
    /// The file it was read from, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `pdf`, `html`, `markdown`, `text`, `docx` or `odt`; absent when it was not recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The title it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The file's modification time when it was read (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ms: Option<i64>,
    /// Its pages, for formats with pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u32>,
    /// Its passages.
    pub chunks: usize,
    /// Characters of text.
    pub chars: usize,
    /// Whether it is searchable.
    pub status: DocumentStatus,
    /// Why it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was odd but not fatal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When it was first added (ms).
    pub created_ms: i64,
    /// When it last changed (ms).
    pub updated_ms: i64,
}

impl DocumentInfo {
    /// A document from `source` not read yet: a new one, or `known` again under its id.
    fn fresh(
        source: &DocumentSource,
        known: Option<&DocumentInfo>,
        sha256: String,
        bytes: u64,
        modified_ms: Option<i64>,
        format: Option<Format>,
    ) -> DocumentInfo {
        let now = tabagent_memory::now_ms();
        DocumentInfo {
            id: known.map(|d| d.id.clone()).unwrap_or_else(new_document_id),
            name: source.name(),
            path: match source {
                DocumentSource::File(path) => Some(path.display().to_string()),
                DocumentSource::Upload { .. } => None,
            },
            format,
            title: None,
            sha256,
            bytes,
            modified_ms,
            pages: None,
            chunks: 0,
            chars: 0,
            status: DocumentStatus::Ready,
            error: None,
            warnings: Vec::new(),
            created_ms: known.map_or(now, |d| d.created_ms),
            updated_ms: now,
        }
    }

    /// Where it came from: its file, or an upload under its name.
    fn source(&self) -> DocumentSource {
        match &self.path {
            Some(path) => DocumentSource::File(PathBuf::from(path)),
            None => DocumentSource::Upload {
                name: self.name.clone(),
            },
        }
    }
}

/// Where a passage appears.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Citation {
    /// The document's id.
    pub document: String,
    /// The page, from 1, for formats with pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The passage's first character in the page's text (the document's, without pages).
    pub start: usize,
    /// One past its last.
    pub end: usize,
}

/// What an ingestion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestOutcome {
    /// A new document.
    Added,
    /// A known document whose content changed: its passages replaced.
    Replaced,
    /// A known document with the same content: nothing written but its modification time.
    Unchanged,
    /// A file that moved: the document follows it, its passages untouched.
    Moved,
}

/// Why a document could not be ingested or changed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Its text could not be had.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// Its vectors could not be made.
    #[error("the embedding model failed: {0}")]
    Embed(#[from] EmbedderError),
    /// The memory refused or failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A file larger than the library reads.
    #[error("the file is {bytes} bytes; the librarian reads files up to {max} bytes (librarian.max_file_bytes)")]
    FileTooLarge {
        /// Its size.
        bytes: u64,
        /// The cap.
        max: u64,
    },
    /// More passages than one document may have.
    #[error("the document has {chunks} passages; at most {max} fit one document")]
    TooLarge {
        /// Its passages.
        chunks: usize,
        /// The cap.
        max: usize,
    },
    /// No such document.
    #[error("no document `{0}`")]
    NotFound(String),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// The documents in a memory.
pub struct Library<M> {
    memory: M,
    extractor: Extractor,
    chunker: Chunker,
    embedder: Option<Arc<dyn Embedder>>,
    max_chunks: usize,
    max_file_bytes: u64,
    /// One change at a time (see the module's note).
    changing: tokio::sync::Mutex<()>,
}

impl<M> std::fmt::Debug for Library<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("chunker", &self.chunker)
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.space().to_string()),
            )
            .finish_non_exhaustive()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn document_key(id: &str) -> String {
    format!("document:{id}")
}

fn document_tag(id: &str) -> String {
    format!("doc:{id}")
}

fn content_tag(sha256: &str) -> String {
    format!("sha256:{sha256}")
}

/// What a passage record holds besides its text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ChunkData {
    /// The hash of its text.
    hash: String,
    citations: Vec<Citation>,
}

/// A passage as the memory holds it (or will).
struct Passage {
    key: String,
    text: String,
    data: ChunkData,
    /// The stored record, when there is one.
    record: Option<Record>,
}

impl<M: MemoryApi> Library<M> {
    /// A library over `memory`: passages cut by `chunker` and embedded by `embedder` (none:
    /// keyword search only), at most `max_chunks` per document.
    pub fn new(
        memory: M,
        extractor: Extractor,
        chunker: Chunker,
        embedder: Option<Arc<dyn Embedder>>,
        max_chunks: usize,
    ) -> Self {
        Self {
            memory,
            extractor,
            chunker,
            embedder,
            max_chunks: max_chunks.clamp(1, 9_000),
            max_file_bytes: 256 << 20,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// Files larger than `bytes` are not read (kept as failed documents).
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The most a file may hold.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// The memory it writes to.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Reads, chunks, embeds and stores a document from `bytes`, or finds it unchanged (or
    /// moved). A file that cannot be read is kept as a failed document (and its old passages
    /// removed) before the error is returned; an upload that cannot be read leaves nothing.
    pub async fn ingest(
        &self,
        source: DocumentSource,
        bytes: Vec<u8>,
        modified_ms: Option<i64>,
    ) -> Result<(DocumentInfo, IngestOutcome), IngestError> {
        let _one = self.changing.lock().await;
        let sha256 = sha256_hex(&bytes);
        let known = match &source {
            DocumentSource::File(_) => self.by_source(&source.record_source()).await?,
            DocumentSource::Upload { .. } => self
                .by_content(&sha256)
                .await?
                .into_iter()
                .find(|d| d.path.is_none()),
        };
        if let Some(doc) = &known {
            if doc.sha256 == sha256 && doc.status == DocumentStatus::Ready {
                let mut doc = doc.clone();
                if doc.modified_ms != modified_ms && modified_ms.is_some() {
                    doc.modified_ms = modified_ms;
                    self.memory.apply(vec![document_change(&doc)?]).await?;
                }
                return Ok((doc, IngestOutcome::Unchanged));
            }
        }
        if let (None, DocumentSource::File(path)) = (&known, &source) {
            if let Some(mut doc) = self.moved_here(&sha256).await? {
                doc.path = Some(path.display().to_string());
                doc.name = source.name();
                doc.modified_ms = modified_ms;
                doc.updated_ms = tabagent_memory::now_ms();
                self.memory.apply(vec![document_change(&doc)?]).await?;
                return Ok((doc, IngestOutcome::Moved));
            }
        }
        let mut doc = DocumentInfo::fresh(
            &source,
            known.as_ref(),
            sha256,
            bytes.len() as u64,
            modified_ms,
            Format::detect(&source.name(), &bytes),
        );
        let read = self.read(doc.format, bytes).await;
        let (extracted, chunks) = match read {
            Ok(read) => read,
            Err(error) => {
                if matches!(source, DocumentSource::File(_)) {
                    doc.status = DocumentStatus::Failed;
                    doc.error = Some(error.to_string());
                    self.write(&doc, Vec::new()).await?;
                }
                return Err(error);
            }
        };
        doc.title = extracted.title.clone();
        doc.pages = extracted.pages.iter().filter_map(|p| p.number).max();
        doc.chars = extracted.chars();
        doc.warnings = extracted.warnings.clone();
        doc.chunks = chunks.len();
        self.write(&doc, chunks).await?;
        let outcome = if known.is_some() {
            IngestOutcome::Replaced
        } else {
            IngestOutcome::Added
        };
        Ok((doc, outcome))
    }

    /// Reads the file at `path` (absolute) and ingests it.
    pub async fn ingest_file(
        &self,
        path: &Path,
    ) -> Result<(DocumentInfo, IngestOutcome), IngestError> {
        let io = |e: std::io::Error| IngestError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let metadata = tokio::fs::metadata(path).await.map_err(io)?;
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        if let Some(doc) = self.by_path(path).await? {
            // The same size and time: not read again (a file that failed is, so that its error
            // is given again rather than taken for success).
            let same = doc.bytes == metadata.len()
                && doc.modified_ms.is_some()
                && doc.modified_ms == modified_ms;
            if same && doc.status == DocumentStatus::Ready {
                return Ok((doc, IngestOutcome::Unchanged));
            }
        }
        if metadata.len() > self.max_file_bytes {
            let error = IngestError::FileTooLarge {
                bytes: metadata.len(),
                max: self.max_file_bytes,
            };
            self.keep_failed(path, metadata.len(), modified_ms, &error)
                .await?;
            return Err(error);
        }
        let bytes = tokio::fs::read(path).await.map_err(io)?;
        self.ingest(DocumentSource::File(path.to_path_buf()), bytes, modified_ms)
            .await
    }

    /// Keeps a file that was not read as a failed document (its old passages removed).
    async fn keep_failed(
        &self,
        path: &Path,
        bytes: u64,
        modified_ms: Option<i64>,
        error: &IngestError,
    ) -> Result<(), IngestError> {
        let _one = self.changing.lock().await;
        let source = DocumentSource::File(path.to_path_buf());
        let known = self.by_source(&source.record_source()).await?;
        let format = Format::detect(&source.name(), &[]);
        let mut doc = DocumentInfo::fresh(
            &source,
            known.as_ref(),
            String::new(),
            bytes,
            modified_ms,
            format,
        );
        doc.status = DocumentStatus::Failed;
        doc.error = Some(error.to_string());
        self.write(&doc, Vec::new()).await
    }

    /// Removes a document and the passages only it cites.
    pub async fn remove(&self, id: &str) -> Result<DocumentInfo, IngestError> {
        let _one = self.changing.lock().await;
        let doc = self
            .get(id)
            .await?
            .ok_or_else(|| IngestError::NotFound(id.to_string()))?;
        let record = self
            .memory
            .get_by_key(Store::Meta, document_key(id))
            .await?
            .ok_or_else(|| IngestError::NotFound(id.to_string()))?;
        let mut changes = self.passage_changes(id, Vec::new()).await?;
        changes.push(Change::Delete { id: record.id });
        self.memory.apply(changes).await?;
        Ok(doc)
    }

    /// Removes the document read from `path`, if there is one.
    pub async fn remove_path(&self, path: &Path) -> Result<Option<DocumentInfo>, IngestError> {
        match self.by_path(path).await? {
            Some(doc) => self.remove(&doc.id).await.map(Some),
            None => Ok(None),
        }
    }

    /// The document with this id.
    pub async fn get(&self, id: &str) -> Result<Option<DocumentInfo>, IngestError> {
        let record = self
            .memory
            .get_by_key(Store::Meta, document_key(id))
            .await?;
        Ok(record.and_then(|r| serde_json::from_value(r.data).ok()))
    }

    /// The document read from `path`.
    pub async fn by_path(&self, path: &Path) -> Result<Option<DocumentInfo>, IngestError> {
        self.by_source(&DocumentSource::File(path.to_path_buf()).record_source())
            .await
    }

    /// Every document, newest first.
    pub async fn list(&self) -> Result<Vec<DocumentInfo>, IngestError> {
        self.documents(Filter {
            stores: vec![Store::Meta],
            kinds: vec![DOCUMENT_KIND.into()],
            ..Filter::default()
        })
        .await
    }

    /// A document's passages in reading order, with where each appears in it.
    pub async fn passages(&self, id: &str) -> Result<Vec<(Citation, Record)>, IngestError> {
        let mut out = Vec::new();
        for record in self.records_citing(id).await? {
            let data: ChunkData = serde_json::from_value(record.data.clone()).unwrap_or_default();
            for citation in data.citations.into_iter().filter(|c| c.document == id) {
                out.push((citation, record.clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn read(
        &self,
        format: Option<Format>,
        bytes: Vec<u8>,
    ) -> Result<(Extracted, Vec<Chunk>), IngestError> {
        let format = format.ok_or(ExtractError::Unsupported)?;
        let extractor = self.extractor.clone();
        let chunker = self.chunker.clone();
        let (extracted, chunks) = tokio::task::spawn_blocking(move || {
            extractor.extract(format, &bytes).map(|extracted| {
                let chunks = chunker.chunks(&extracted);
                (extracted, chunks)
            })
        })
        .await
        .map_err(|e| ExtractError::Malformed(format!("the reader stopped: {e}")))??;
        if chunks.len() > self.max_chunks {
            return Err(IngestError::TooLarge {
                chunks: chunks.len(),
                max: self.max_chunks,
            });
        }
        Ok((extracted, chunks))
    }

    /// Writes `doc`'s record and makes its passages `chunks`, in one transaction.
    async fn write(&self, doc: &DocumentInfo, chunks: Vec<Chunk>) -> Result<(), IngestError> {
        let mut changes = self.passage_changes(&doc.id, chunks).await?;
        changes.push(document_change(doc)?);
        self.memory.apply(changes).await?;
        Ok(())
    }

    /// The changes that make document `id`'s passages `chunks`: new passages inserted, shared
    /// ones re-cited, ones it no longer has un-cited (deleted when no document cites them). A
    /// passage whose citations do not change is not written.
    async fn passage_changes(
        &self,
        id: &str,
        chunks: Vec<Chunk>,
    ) -> Result<Vec<Change>, IngestError> {
        // This document's passages as they will be: by text hash, with their citations.
        let mut wanted: BTreeMap<String, (String, Vec<Citation>)> = BTreeMap::new();
        for chunk in chunks {
            let hash = sha256_hex(chunk.text.as_bytes())[..32].to_string();
            let entry = wanted
                .entry(hash)
                .or_insert_with(|| (chunk.text.clone(), Vec::new()));
            entry.1.push(Citation {
                document: id.to_string(),
                page: chunk.page,
                start: chunk.start,
                end: chunk.end,
            });
        }
        let mut passages: Vec<Passage> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        // Passages it cites today.
        for record in self.records_citing(id).await? {
            let mut data: ChunkData =
                serde_json::from_value(record.data.clone()).unwrap_or_default();
            let before = data.citations.clone();
            data.citations.retain(|c| c.document != id);
            if let Some((_, mine)) = wanted.remove(&data.hash) {
                data.citations.extend(mine);
            }
            data.citations.sort();
            seen.insert(record.key.clone().unwrap_or_default());
            let unchanged = data.citations == before;
            if !unchanged {
                passages.push(Passage {
                    key: record.key.clone().unwrap_or_default(),
                    text: record.text.clone(),
                    data,
                    record: Some(record),
                });
            }
        }
        // Passages new to it: shared with another document when one has the same text.
        for (hash, (text, mine)) in wanted {
            let shared_key = format!("chunk:{hash}");
            let existing = if seen.contains(&shared_key) {
                None
            } else {
                self.memory
                    .get_by_key(Store::Knowledge, shared_key.clone())
                    .await?
            };
            let (key, mut data, record) = match existing {
                Some(record) => {
                    let data: ChunkData =
                        serde_json::from_value(record.data.clone()).unwrap_or_default();
                    let documents: BTreeSet<&str> =
                        data.citations.iter().map(|c| c.document.as_str()).collect();
                    if documents.len() >= MAX_CITING_DOCUMENTS {
                        (
                            format!("chunk:{hash}:{id}"),
                            ChunkData {
                                hash: hash.clone(),
                                citations: Vec::new(),
                            },
                            None,
                        )
                    } else {
                        (shared_key, data, Some(record))
                    }
                }
                None => (
                    shared_key,
                    ChunkData {
                        hash: hash.clone(),
                        citations: Vec::new(),
                    },
                    None,
                ),
            };
            data.hash = hash;
            data.citations.extend(mine);
            data.citations.sort();
            passages.push(Passage {
                key,
                text,
                data,
                record,
            });
        }
        // Vectors for every passage written (a record rewritten loses its vector).
        let written: Vec<&Passage> = passages
            .iter()
            .filter(|p| !p.data.citations.is_empty())
            .collect();
        let vectors = self
            .vectors(written.iter().map(|p| p.text.clone()).collect())
            .await?;
        let mut vectors = vectors.into_iter();
        let mut changes = Vec::new();
        for passage in &passages {
            if passage.data.citations.is_empty() {
                if let Some(record) = &passage.record {
                    changes.push(Change::Delete { id: record.id });
                }
                continue;
            }
            let mut documents: Vec<String> = passage
                .data
                .citations
                .iter()
                .map(|c| document_tag(&c.document))
                .collect();
            documents.dedup();
            let data = json_data(&passage.data)?;
            changes.push(Change::Insert {
                store: Store::Knowledge,
                record: NewRecord {
                    kind: Some(CHUNK_KIND.into()),
                    text: passage.text.clone(),
                    data,
                    tags: documents,
                    source: passage
                        .data
                        .citations
                        .first()
                        .map(|c| format!("document:{}", c.document)),
                    key: Some(passage.key.clone()),
                    embedding: vectors.next().flatten(),
                    created_at: passage.record.as_ref().map(|r| r.created_at),
                    ..NewRecord::default()
                },
            });
        }
        Ok(changes)
    }

    /// One vector per text (each `None` without an embedding model).
    async fn vectors(&self, texts: Vec<String>) -> Result<Vec<Option<Embedding>>, IngestError> {
        let Some(embedder) = &self.embedder else {
            return Ok(vec![None; texts.len()]);
        };
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let vectors = embedder.embed(batch.to_vec()).await?;
            if vectors.len() != batch.len() {
                return Err(IngestError::Embed(EmbedderError(format!(
                    "{} vectors for {} texts",
                    vectors.len(),
                    batch.len()
                ))));
            }
            out.extend(vectors.into_iter().map(|vector| {
                Some(Embedding {
                    space: embedder.space().to_string(),
                    vector,
                })
            }));
        }
        Ok(out)
    }

    /// Passage records citing document `id`.
    async fn records_citing(&self, id: &str) -> Result<Vec<Record>, IngestError> {
        self.all(Filter {
            stores: vec![Store::Knowledge],
            kinds: vec![CHUNK_KIND.into()],
            tags: vec![document_tag(id)],
            ..Filter::default()
        })
        .await
    }

    async fn all(&self, filter: Filter) -> Result<Vec<Record>, IngestError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .memory
                .list(filter.clone(), Order::Oldest, MAX_PAGE, after)
                .await?;
            out.extend(page.records);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn documents(&self, filter: Filter) -> Result<Vec<DocumentInfo>, IngestError> {
        let mut documents: Vec<DocumentInfo> = self
            .all(filter)
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.data).ok())
            .collect();
        documents.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        Ok(documents)
    }

    async fn by_source(&self, source: &str) -> Result<Option<DocumentInfo>, IngestError> {
        Ok(self
            .documents(Filter {
                stores: vec![Store::Meta],
                kinds: vec![DOCUMENT_KIND.into()],
                source: Some(source.to_string()),
                ..Filter::default()
            })
            .await?
            .into_iter()
            .next())
    }

    async fn by_content(&self, sha256: &str) -> Result<Vec<DocumentInfo>, IngestError> {
        self.documents(Filter {
            stores: vec![Store::Meta],
            kinds: vec![DOCUMENT_KIND.into()],
            tags: vec![content_tag(sha256)],
            ..Filter::default()
        })
        .await
    }

    /// A file document with this content whose file is gone: the file moved here.
    async fn moved_here(&self, sha256: &str) -> Result<Option<DocumentInfo>, IngestError> {
        Ok(self.by_content(sha256).await?.into_iter().find(|d| {
            d.status == DocumentStatus::Ready
                && d.path.as_deref().is_some_and(|p| !Path::new(p).exists())
        }))
    }
}

/// The change that writes `doc`'s record.
fn document_change(doc: &DocumentInfo) -> Result<Change, IngestError> {
    Ok(Change::Insert {
        store: Store::Meta,
        record: NewRecord {
            kind: Some(DOCUMENT_KIND.into()),
            text: doc.title.clone().unwrap_or_else(|| doc.name.clone()),
            data: json_data(doc)?,
            tags: vec![DOCUMENT_KIND.into(), content_tag(&doc.sha256)],
            source: Some(doc.source().record_source()),
            key: Some(document_key(&doc.id)),
            created_at: Some(doc.created_ms),
            ..NewRecord::default()
        },
    })
}

/// A record's `data`.
fn json_data(value: &impl Serialize) -> Result<serde_json::Value, IngestError> {
    serde_json::to_value(value).map_err(|e| {
        IngestError::Memory(MemoryError::Invalid {
            param: "data",
            message: e.to_string(),
        })
    })
}

fn new_document_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("doc_{}", &id[..16])
}

/// The citations a passage record holds (none for other records).
pub fn citations(record: &Record) -> Vec<Citation> {
    if record.kind != CHUNK_KIND {
        return Vec::new();
    }
    serde_json::from_value::<ChunkData>(record.data.clone())
        .map(|d| d.citations)
        .unwrap_or_default()
}

/// Where a passage comes from, as a reader is shown it: the document's name and title with the
/// page and range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The document's id.
    pub document: String,
    /// Its file name.
    pub name: String,
    /// Its title, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The file it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The page, from 1 (formats with pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The passage's first character in the page's text.
    pub start: usize,
    /// One past its last.
    pub end: usize,
}

impl Source {
    /// `name, p. 3` (the title when there is one).
    pub fn label(&self) -> String {
        let name = self.title.as_deref().unwrap_or(&self.name);
        match self.page {
            Some(page) => format!("{name}, p. {page}"),
            None => name.to_string(),
        }
    }
}

/// The sources of `records`' passages (empty for records that are not passages), one list per
/// record; each document is read once.
pub async fn sources<M: MemoryApi>(
    memory: &M,
    records: &[&Record],
) -> Result<Vec<Vec<Source>>, MemoryError> {
    let mut documents: BTreeMap<String, Option<DocumentInfo>> = BTreeMap::new();
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let mut found = Vec::new();
        for citation in citations(record) {
            if !documents.contains_key(&citation.document) {
                let document = memory
                    .get_by_key(Store::Meta, document_key(&citation.document))
                    .await?
                    .and_then(|r| serde_json::from_value::<DocumentInfo>(r.data).ok());
                documents.insert(citation.document.clone(), document);
            }
            if let Some(Some(document)) = documents.get(&citation.document) {
                found.push(Source {
                    document: citation.document,
                    name: document.name.clone(),
                    title: document.title.clone(),
                    path: document.path.clone(),
                    page: citation.page,
                    start: citation.start,
                    end: citation.end,
                });
            }
        }
        out.push(found);
    }
    Ok(out)
}
