//! The knowledge graph: entities and typed relations between them, each relation carrying its
//! provenance (the record — a message, a passage of a document — it was read from).
//!
//! Entities are records in the knowledge store (kind `entity`), so keyword and vector search
//! find them like any other record; `entity_names` maps every normalized name and alias to its
//! entity. Relations live in their own table and die with either end. Writes go through the
//! writer like every change ([`Change::Entity`](crate::Change::Entity),
//! [`Change::Relate`](crate::Change::Relate), [`Change::Merge`](crate::Change::Merge),
//! [`Change::Consolidate`](crate::Change::Consolidate)); walks run on readers ([`walk`]).

pub(crate) mod consolidate;
mod names;
pub mod walk;
pub(crate) mod write;

use serde::{Deserialize, Serialize};

use crate::writer::{Change, Outcome};
use crate::{Embedding, Memory, MemoryError};

pub use names::{normalize, relation_type};
pub use walk::{Direction, GraphPath, Neighbourhood, Reached, WalkOptions};

/// The kind of the knowledge records that are entities.
pub const ENTITY_KIND: &str = "entity";

/// An entity to create, or to merge into the one of the same name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEntity {
    /// Its name; names are compared case- and space-insensitively.
    pub name: String,
    /// What it is (`person`, `place`, `organization`...).
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// A sentence about it.
    pub description: Option<String>,
    /// Other names it goes by.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Where it was first seen.
    pub source: Option<String>,
    /// A vector for it (of its name and description), to find it by meaning.
    pub embedding: Option<Embedding>,
}

/// A stored entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Its record id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// A sentence about it.
    pub description: Option<String>,
    /// Other names it goes by (including those of entities merged into it).
    pub aliases: Vec<String>,
    /// Where it was first seen.
    pub source: Option<String>,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
}

/// An entity named by id, or by name (created when a relation names one that does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EntityRef {
    /// Its record id.
    Id(i64),
    /// One of its names.
    Name(String),
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityRef::Id(id) => write!(f, "{id}"),
            EntityRef::Name(name) => write!(f, "`{name}`"),
        }
    }
}

/// A relation to record: `subject relation object`, e.g. `Ada Lovelace worked_with Charles
/// Babbage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRelation {
    /// Where it starts.
    pub subject: EntityRef,
    /// Its type; stored lowercase with `_` for spaces (`works for` → `works_for`).
    pub relation: String,
    /// Where it ends.
    pub object: EntityRef,
    /// The record it was read from (a message, a passage).
    pub evidence: Option<i64>,
    /// Where it came from, when that is not a record (a URL, a tool).
    pub source: Option<String>,
    /// How sure the extractor was, 0 to 1.
    pub confidence: Option<f32>,
}

/// A stored relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    /// Its id.
    pub id: i64,
    /// The subject entity.
    pub subject: i64,
    /// Its type.
    pub relation: String,
    /// The object entity.
    pub object: i64,
    /// The record it was read from.
    pub evidence: Option<i64>,
    /// Where it came from.
    pub source: Option<String>,
    /// How sure the extractor was.
    pub confidence: Option<f32>,
    /// When it was recorded (ms).
    pub created_at: i64,
}

/// Entities folded into another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merge {
    /// The entity that remains.
    pub kept: i64,
    /// The entities folded into it (now gone; their names are its aliases).
    pub merged: Vec<i64>,
}

/// How [`Change::Consolidate`](crate::Change::Consolidate) finds duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConsolidateOptions {
    /// Also merge entities whose vectors (same space) are at least this cosine-similar.
    pub similarity: Option<f32>,
}

impl Memory {
    /// Creates an entity, or folds `entity` into the one that has its name.
    pub fn upsert_entity(&self, entity: NewEntity) -> Result<Entity, MemoryError> {
        match self.apply(vec![Change::Entity { entity }])?.pop() {
            Some(Outcome::Entity { entity }) => Ok(entity),
            _ => Err(MemoryError::Commit(
                "the writer returned no entity".to_string(),
            )),
        }
    }

    /// Records a relation, creating entities it names that do not exist yet.
    pub fn relate(&self, relation: NewRelation) -> Result<Relation, MemoryError> {
        match self.apply(vec![Change::Relate { relation }])?.pop() {
            Some(Outcome::Related { relation }) => Ok(relation),
            _ => Err(MemoryError::Commit(
                "the writer returned no relation".to_string(),
            )),
        }
    }

    /// The entity `reference` names.
    pub fn entity(&self, reference: &EntityRef) -> Result<Entity, MemoryError> {
        self.read(|conn| {
            let id = write::resolve(conn, reference)?;
            write::read_entity(conn, id)?
                .ok_or_else(|| MemoryError::EntityNotFound(reference.to_string()))
        })
    }

    /// Relation `id`.
    pub fn relation(&self, id: i64) -> Result<Relation, MemoryError> {
        self.read(|conn| {
            use rusqlite::OptionalExtension;
            conn.query_row(
                &format!(
                    "SELECT {} FROM relations WHERE id = ?1",
                    write::RELATION_COLUMNS
                ),
                [id],
                write::row_to_relation,
            )
            .optional()?
            .ok_or(MemoryError::RelationNotFound(id))
        })
    }

    /// The entities within `hops` relations of `start` and the relations among them.
    pub fn neighbourhood(
        &self,
        start: &EntityRef,
        hops: u32,
        options: &WalkOptions,
    ) -> Result<Neighbourhood, MemoryError> {
        self.read(|conn| {
            walk::ready(walk::neighbourhood(
                &mut walk::SqliteGraph(conn),
                start,
                hops,
                options,
            ))
        })
    }

    /// A shortest path of at most `max_hops` relations from `from` to `to`, if any.
    pub fn shortest_path(
        &self,
        from: &EntityRef,
        to: &EntityRef,
        max_hops: u32,
        options: &WalkOptions,
    ) -> Result<Option<GraphPath>, MemoryError> {
        self.read(|conn| {
            walk::ready(walk::shortest_path(
                &mut walk::SqliteGraph(conn),
                from,
                to,
                max_hops,
                options,
            ))
        })
    }

    /// The merges [`consolidate`](Self::consolidate) would make, without making them.
    pub fn duplicate_entities(
        &self,
        options: &ConsolidateOptions,
    ) -> Result<Vec<Merge>, MemoryError> {
        self.read(|conn| {
            let indexes = self.indexes_caught_up(conn)?;
            consolidate::duplicates(conn, &indexes, options)
        })
    }

    /// Merges duplicate entities (see [`duplicate_entities`](Self::duplicate_entities)), all
    /// in one transaction.
    pub fn consolidate(&self, options: &ConsolidateOptions) -> Result<Vec<Merge>, MemoryError> {
        let merges = self.duplicate_entities(options)?;
        if merges.is_empty() {
            return Ok(merges);
        }
        let changes = merges
            .iter()
            .map(|m| Change::Merge {
                kept: m.kept,
                merged: m.merged.clone(),
            })
            .collect();
        self.apply(changes)?;
        Ok(merges)
    }
}
