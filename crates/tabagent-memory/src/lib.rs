//! tabagent's memory: seven stores in one SQLite database, searched by keyword (FTS5, BM25)
//! and by vector (an HNSW index per vector space, hnswlib), alone or fused.
//!
//! - [`Store`]: the seven stores; [`record`]: records, filters, limits.
//! - [`Memory`]: opening a database, writing (grouped commits, atomic multi-record changes),
//!   reading, listing, searching ([`search`]), backup, restore and checks ([`maintenance`]).
//! - [`vector`]: the HNSW indexes, a cache of SQLite's `vectors` table that catches up by
//!   replaying a change log.
//!
//! Storage only: vectors are passed in (the server embeds text with its encoder).
//!
//! ```no_run
//! use tabagent_memory::{Memory, MemoryConfig, NewRecord, Store, SearchRequest};
//! # fn main() -> Result<(), tabagent_memory::MemoryError> {
//! let memory = Memory::open(&MemoryConfig::at("/tmp/memory"))?;
//! memory.insert(Store::Knowledge, NewRecord { text: "Paris is the capital of France".into(), ..Default::default() })?;
//! let hits = memory.search(&SearchRequest::keyword("capital of France"))?;
//! assert_eq!(hits.hits.len(), 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod api;
mod db;
pub mod graph;
mod hnsw;
pub mod maintenance;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod record;
mod schema;
pub mod search;
mod store;
pub mod vector;
mod writer;

pub use api::{LocalMemory, MemoryApi, MemoryResult};
pub use db::{Memory, MemoryConfig, Stats, StoreStats};
pub use graph::{
    ConsolidateOptions, Direction, Entity, EntityRef, GraphPath, Merge, Neighbourhood, NewEntity,
    NewRelation, Reached, Relation, WalkOptions,
};
pub use maintenance::CheckReport;
#[cfg(feature = "postgres")]
pub use postgres::PgMemory;
pub use record::{Embedding, Filter, Limits, NewRecord, Order, Page, Record};
pub use schema::Durability;
pub use search::{Hit, Mode, SearchRequest, SearchResults, Why};
pub use store::Store;
pub use vector::{HnswParams, Metric, SpaceInfo};
pub use writer::{Change, Outcome};

use std::path::Path;

/// Why a memory operation failed, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// The caller named a store that does not exist.
    #[error("unknown store `{0}`; the stores are conversations, knowledge, embeddings, tool-results, experience, summaries and meta")]
    UnknownStore(String),
    /// The caller's input breaks a rule or a limit.
    #[error("{message}")]
    Invalid {
        /// The offending field.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A vector of the wrong width for its space.
    #[error("vector space `{space}` holds {expected}-dimensional vectors; this one has {got}")]
    Dimensions {
        /// The space.
        space: String,
        /// Its width.
        expected: usize,
        /// The vector's.
        got: usize,
    },
    /// No such record.
    #[error("no record {0}")]
    NotFound(i64),
    /// No entity has this id or name.
    #[error("no entity {0}")]
    EntityNotFound(String),
    /// No such relation.
    #[error("no relation {0}")]
    RelationNotFound(i64),
    /// The database file is not one this version can use.
    #[error("memory database: {0}")]
    Corrupt(String),
    /// SQLite failed.
    #[error("memory database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A commit failed (disk full, I/O error); nothing of it was written.
    #[error("memory database: the commit failed: {0}")]
    Commit(String),
    /// The vector index failed.
    #[error("vector index: {0}")]
    Index(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The memory was closed while the operation waited.
    #[error("the memory is closed")]
    Closed,
    /// A remote memory could not be reached, or failed in a way that is not the caller's.
    #[error("memory service: {0}")]
    Unavailable(String),
}

impl MemoryError {
    pub(crate) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        MemoryError::Invalid {
            param,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        MemoryError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the caller's input caused it (a 4xx), rather than the service (a 5xx).
    pub fn is_callers_fault(&self) -> bool {
        matches!(
            self,
            MemoryError::UnknownStore(_)
                | MemoryError::Invalid { .. }
                | MemoryError::Dimensions { .. }
                | MemoryError::NotFound(_)
                | MemoryError::EntityNotFound(_)
                | MemoryError::RelationNotFound(_)
        )
    }

    /// The request field at fault, when there is one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            MemoryError::UnknownStore(_) => Some("store"),
            MemoryError::Invalid { param, .. } => Some(param),
            MemoryError::Dimensions { .. } => Some("vector"),
            MemoryError::EntityNotFound(_) => Some("entity"),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch: the clock of records' `created_at`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
