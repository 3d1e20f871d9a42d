//! The librarian in the server: one [`Shelf`] over the server's memory, its passages cut in the
//! memory's embedding model's tokens and embedded by it, made on first use; and the folders it
//! follows while the server runs.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tabagent_librarian::chunk::Characters;
use tabagent_librarian::{
    Chunker, DocumentInfo, Embedder, EmbedderError, Extractor, IngestOutcome, Library, Noticed,
    TokenCounter,
};
use tabagent_onnx::TextTokenizer;

use crate::error::ServiceError;
use crate::memory_backend::MemoryBackend;
use crate::registry::Engine;
use crate::state::{AppState, WeakAppState};

/// The server's documents.
pub type Shelf = Library<MemoryBackend>;

/// What the librarian did, as `/v1/documents/events` streams it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LibraryEvent {
    /// The first event of a stream: the folders followed, and whether their scan is done.
    Status {
        /// `librarian.folders` being followed.
        following: Vec<String>,
        /// Whether the library is in line with them (the scan at start has ended).
        scanned: bool,
    },
    /// A document was read (or found unchanged or moved).
    Ingested {
        /// The file, for files.
        path: Option<String>,
        /// What reading it did.
        outcome: IngestOutcome,
        /// It.
        document: DocumentInfo,
    },
    /// A document was removed (its file deleted, or by request).
    Removed {
        /// The file it was read from.
        path: Option<String>,
        /// It.
        document: DocumentInfo,
    },
    /// A file could not be read.
    Failed {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// The followed folders were scanned: the library is in line with them.
    Scanned,
    /// This stream fell behind and missed events (list the documents again).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Characters a token stands for when passages are measured in characters (no tokenizer at
/// hand: a memory without an embedding model, or one that runs in the ML worker).
const CHARS_PER_TOKEN: usize = 4;

/// The memory's embedding model, through the server's registry (loaded, batched, evicted like
/// any request's).
struct MemoryEmbedder {
    state: WeakAppState,
    model: String,
}

impl Embedder for MemoryEmbedder {
    fn space(&self) -> &str {
        &self.model
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedderError>> {
        Box::pin(async move {
            let state = self
                .state
                .upgrade()
                .ok_or_else(|| EmbedderError("the server is stopping".into()))?;
            crate::embedding::with_model(&state, &self.model, texts)
                .await
                .map(|(_, vectors)| vectors)
                .map_err(|e| EmbedderError(e.to_string()))
        })
    }
}

/// Tokens of the embedding model's own tokenizer.
struct Tokens(Arc<TextTokenizer>);

impl TokenCounter for Tokens {
    fn count(&self, text: &str) -> usize {
        self.0.count(text)
    }
}

/// The shelf for `state`'s memory and configuration.
pub async fn open(state: &AppState) -> Result<Arc<Shelf>, ServiceError> {
    let memory = state.memory().ok_or_else(ServiceError::memory_off)?.clone();
    let config = state.config();
    let settings = &config.librarian;
    let (chunker, embedder) = match &config.memory.embedding_model {
        Some(model) => {
            let acquired = state.registry().acquire(model, None).await?;
            // The id the registry knows the model by is the vector space of every memory record
            // (`embedding::for_memory`).
            let space = acquired.id.clone();
            let chunker = match acquired.engine.clone() {
                Engine::Worker(_) => None,
                engine => engine.encoder(&acquired.id).ok().map(|encoder| {
                    let tokenizer = encoder.shared_tokenizer();
                    // The model's limit counts its special tokens (two for BERT's).
                    let max = settings
                        .chunk_tokens
                        .min(tokenizer.max_tokens().saturating_sub(2).max(16));
                    Chunker::new(
                        Arc::new(Tokens(tokenizer)),
                        max,
                        settings.chunk_overlap.min(max / 2),
                    )
                }),
            };
            let chunker = match chunker {
                Some(made) => made.map_err(ServiceError::internal)?,
                None => by_characters(settings)?,
            };
            let embedder: Arc<dyn Embedder> = Arc::new(MemoryEmbedder {
                state: state.downgrade(),
                model: space,
            });
            (chunker, Some(embedder))
        }
        None => (by_characters(settings)?, None),
    };
    let extractor = Extractor::new(Some(config.pdfium_library()));
    Ok(Arc::new(
        Library::new(memory, extractor, chunker, embedder, settings.max_chunks)
            .with_max_file_bytes(settings.max_file_bytes),
    ))
}

fn by_characters(settings: &crate::config::LibrarianSettings) -> Result<Chunker, ServiceError> {
    Chunker::new(
        Arc::new(Characters),
        settings.chunk_tokens * CHARS_PER_TOKEN,
        settings.chunk_overlap * CHARS_PER_TOKEN,
    )
    .map_err(ServiceError::internal)
}

/// The configured folders that exist, as absolute paths without links; the others are logged.
pub fn folders(settings: &crate::config::LibrarianSettings) -> Vec<PathBuf> {
    settings
        .folders
        .iter()
        .filter_map(|folder| match folder.canonicalize() {
            Ok(path) if path.is_dir() => Some(path),
            _ => {
                tracing::warn!(folder = %folder.display(), "librarian.folders: not a folder; not followed");
                None
            }
        })
        .collect()
}

/// `path` resolved (links followed), if it names a file inside one of `librarian.folders`;
/// else why not.
pub fn file_in_folders(
    settings: &crate::config::LibrarianSettings,
    path: &str,
) -> Result<PathBuf, &'static str> {
    let folders = folders(settings);
    if folders.is_empty() {
        return Err(
            "this server reads no folders (librarian.folders is empty): upload the file instead",
        );
    }
    let outside = "`path` must name a file inside one of librarian.folders";
    let given = PathBuf::from(path);
    if !given.is_absolute() {
        return Err("`path` must be absolute");
    }
    let resolved = given.canonicalize().map_err(|_| outside)?;
    if !folders.iter().any(|f| resolved.starts_with(f)) {
        return Err(outside);
    }
    if !resolved.is_file() {
        return Err("`path` is not a file");
    }
    Ok(resolved)
}

/// Starts following `librarian.folders` (when `librarian.watch`): scanned now, then watched
/// until the server stops. Each file read, moved, removed or refused is logged.
pub fn start_following(state: &AppState) {
    let settings = &state.config().librarian;
    if !settings.watch || settings.folders.is_empty() || state.memory().is_none() {
        return;
    }
    let folders = folders(settings);
    if folders.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let shelf = match state.librarian().await {
            Ok(shelf) => shelf,
            Err(e) => {
                tracing::error!(error = %e, "the librarian cannot start; librarian.folders are not followed");
                return;
            }
        };
        let weak = state.downgrade();
        let report = move |noticed: Noticed| {
            log_noticed(&noticed);
            if let Some(state) = weak.upgrade() {
                if matches!(noticed, Noticed::Scanned) {
                    state.set_library_scanned();
                }
                state.library_event(event_of(noticed));
            }
        };
        match tabagent_librarian::follow(shelf, folders.clone(), Box::new(report)) {
            Ok(following) => {
                tracing::info!(folders = ?folders, "the librarian follows its folders");
                state.keep_following(following);
            }
            Err(e) => tracing::error!(error = %e, "the librarian cannot watch its folders"),
        }
    });
}

fn event_of(noticed: Noticed) -> LibraryEvent {
    match noticed {
        Noticed::Ingested {
            path,
            document,
            outcome,
        } => LibraryEvent::Ingested {
            path: Some(path.display().to_string()),
            outcome,
            document,
        },
        Noticed::Removed { path, document } => LibraryEvent::Removed {
            path: Some(path.display().to_string()),
            document,
        },
        Noticed::Failed { path, error } => LibraryEvent::Failed {
            path: path.display().to_string(),
            error: error.to_string(),
        },
        Noticed::Scanned => LibraryEvent::Scanned,
    }
}

fn log_noticed(noticed: &Noticed) {
    match noticed {
        Noticed::Ingested {
            path,
            document,
            outcome,
        } => tracing::info!(
            path = %path.display(),
            id = %document.id,
            chunks = document.chunks,
            outcome = ?outcome,
            "librarian: document"
        ),
        Noticed::Removed { path, document } => {
            tracing::info!(path = %path.display(), id = %document.id, "librarian: document removed")
        }
        Noticed::Failed { path, error } => {
            tracing::warn!(path = %path.display(), error = %error, "librarian: document not read")
        }
        Noticed::Scanned => tracing::info!("librarian: folders scanned"),
    }
}
