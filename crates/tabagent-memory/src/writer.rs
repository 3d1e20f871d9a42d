//! The one writer: applies changes on its own thread, committing whatever arrived together in
//! one transaction (group commit), each caller's changes all or nothing.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};

use rusqlite::backup::Progress;
use rusqlite::{params, Connection, OptionalExtension, Transaction, MAIN_DB};
use serde::{Deserialize, Serialize};

use crate::graph::write as graph;
use crate::record::{check_vector, default_kind, Limits};
use crate::vector::{self, encode, Metric, VectorIndexes};
use crate::{now_ms, MemoryError, NewRecord, Record, Store};

/// One change in an atomic group.
// Built once per request and consumed at once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Writes a record (replacing the one with the same key, if any).
    Insert {
        /// Its store.
        store: Store,
        /// The record.
        record: NewRecord,
    },
    /// Declares a vector space (vectors in an undeclared space create a cosine one). Declaring
    /// an existing space again with the same width and metric does nothing.
    DefineSpace {
        /// Its name.
        space: String,
        /// Width of its vectors.
        dimensions: usize,
        /// How they are compared.
        #[serde(default)]
        metric: Metric,
    },
    /// Deletes a record and its vector (an entity takes its relations with it).
    Delete {
        /// The record.
        id: i64,
    },
    /// Creates a graph entity, or folds it into the one with its name.
    Entity {
        /// The entity.
        entity: crate::NewEntity,
    },
    /// Records a relation between two entities (created by name when new).
    Relate {
        /// The relation.
        relation: crate::NewRelation,
    },
    /// Deletes a relation.
    Unrelate {
        /// The relation.
        id: i64,
    },
    /// Folds entities into another.
    Merge {
        /// The entity that remains.
        kept: i64,
        /// Those folded into it.
        merged: Vec<i64>,
    },
}

/// What a change did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Outcome {
    /// The record as stored.
    Inserted {
        /// It.
        record: Record,
    },
    /// The space exists as declared.
    SpaceDefined {
        /// Its name.
        space: String,
    },
    /// The record that was deleted.
    Deleted {
        /// Its id.
        id: i64,
    },
    /// The entity as stored.
    Entity {
        /// It.
        entity: crate::Entity,
    },
    /// The relation as stored.
    Related {
        /// It.
        relation: crate::Relation,
    },
    /// The relation that was deleted.
    Unrelated {
        /// Its id.
        id: i64,
    },
    /// Entities folded into another.
    Merged {
        /// Which.
        merge: crate::Merge,
    },
}

/// What the writer is asked to do.
pub(crate) enum Work {
    /// Apply changes, all or nothing.
    Changes(Vec<Change>),
    /// Replace the database with a (checked) backup.
    Restore(PathBuf),
    /// Compare every vector index with SQLite while no one writes.
    Check,
}

/// What the writer did.
pub(crate) enum Done {
    Changed(Vec<Outcome>),
    Restored,
    Checked(Vec<String>),
}

/// A caller's work and where to send the answer.
pub(crate) struct Job {
    pub work: Work,
    pub reply: mpsc::SyncSender<Result<Done, MemoryError>>,
}

/// Commits are grouped up to this many callers.
const MAX_GROUP: usize = 256;

/// The writer's state: its connection and the indexes it keeps current.
pub(crate) struct Writer {
    pub conn: Connection,
    pub limits: Limits,
    pub indexes: Arc<RwLock<VectorIndexes>>,
    pub save_every: i64,
    pub saved_at: i64,
}

impl Writer {
    /// Runs until every sender is gone. Each group of changes is committed, then the indexes
    /// catch up, then its callers hear back: a caller that was told "stored" finds its record
    /// by vector too.
    pub(crate) fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP
                && matches!(
                    group.last(),
                    Some(Job {
                        work: Work::Changes(_),
                        ..
                    })
                )
            {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            // Restores and checks run alone, after the changes that came before them.
            let alone = match group.last() {
                Some(Job {
                    work: Work::Changes(_),
                    ..
                }) => None,
                _ => group.pop(),
            };
            if !group.is_empty() {
                let results = commit_group(&mut self.conn, &group, &self.limits);
                self.after_commit();
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result.map(Done::Changed));
                }
            }
            if let Some(job) = alone {
                let result = match &job.work {
                    Work::Restore(path) => self.restore(path).map(|()| Done::Restored),
                    Work::Check => self.check().map(Done::Checked),
                    Work::Changes(_) => Ok(Done::Changed(Vec::new())),
                };
                let _ = job.reply.send(result);
            }
        }
    }

    fn after_commit(&mut self) {
        let Ok(mut indexes) = self.indexes.write() else {
            return;
        };
        // Most commits touch no vector: then there is nothing to catch up.
        let behind = indexes.is_behind(&self.conn).unwrap_or(true);
        if !behind {
            return;
        }
        if let Err(e) = indexes.catch_up(&mut self.conn) {
            tracing::error!(error = %e, "vector index could not catch up; searches will retry");
            return;
        }
        let last = vector::last_seq(&self.conn).unwrap_or(0);
        if last - self.saved_at >= self.save_every {
            match crate::db::save_and_prune(&indexes, &self.conn) {
                Ok(()) => self.saved_at = last,
                Err(e) => tracing::warn!(error = %e, "could not save vector indexes"),
            }
        }
    }

    fn restore(&mut self, path: &Path) -> Result<(), MemoryError> {
        self.conn.restore(MAIN_DB, path, None::<fn(Progress)>)?;
        // A backup from an older version is brought up to this one's schema.
        crate::schema::migrate(&mut self.conn)?;
        // A new epoch tells every index built on the old contents (here or in another
        // process) to start again.
        self.conn.execute(
            "UPDATE memory_meta SET value = ?1 WHERE name = 'epoch'",
            [uuid::Uuid::new_v4().to_string()],
        )?;
        let mut indexes = self
            .indexes
            .write()
            .map_err(|_| MemoryError::Index("the vector index lock is poisoned".to_string()))?;
        indexes.catch_up(&mut self.conn)?;
        self.saved_at = vector::last_seq(&self.conn)?;
        Ok(())
    }

    fn check(&mut self) -> Result<Vec<String>, MemoryError> {
        // Holding the write lock keeps other processes from writing while we compare.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut indexes = self
            .indexes
            .write()
            .map_err(|_| MemoryError::Index("the vector index lock is poisoned".to_string()))?;
        indexes.catch_up_in(&tx)?;
        let problems = indexes.agrees(&tx)?;
        drop(indexes);
        tx.commit()?;
        Ok(problems)
    }
}

fn commit_group(
    conn: &mut Connection,
    group: &[Job],
    limits: &Limits,
) -> Vec<Result<Vec<Outcome>, MemoryError>> {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            return group
                .iter()
                .map(|_| Err(MemoryError::Commit(e.to_string())))
                .collect()
        }
    };
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let Work::Changes(changes) = &job.work else {
            results.push(Ok(Vec::new()));
            continue;
        };
        results.push(apply_atomically(&tx, changes, limits));
    }
    if let Err(e) = index_new_text(&tx) {
        tracing::error!(error = %e, "could not index new records' text; nothing was committed");
        return group
            .iter()
            .map(|_| Err(MemoryError::Commit(e.to_string())))
            .collect();
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => {
            tracing::error!(error = %e, "a memory commit failed");
            group
                .iter()
                .map(|_| Err(MemoryError::Commit(e.to_string())))
                .collect()
        }
    }
}

/// Adds the text of the records written since the last commit to the full-text index, in one
/// statement. FTS5 writes its pending terms to disk at each statement savepoint, so indexing
/// row by row (a trigger) made a segment per record; one statement makes one per commit.
fn index_new_text(tx: &Transaction<'_>) -> Result<(), MemoryError> {
    let (through, newest): (i64, Option<i64>) = tx
        .prepare_cached("SELECT through, (SELECT max(id) FROM records) FROM fts_indexed")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(newest) = newest.filter(|&newest| newest > through) else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO records_fts(rowid, text)
         SELECT id, text FROM records WHERE id > ?1 AND id <= ?2 ORDER BY id",
    )?
    .execute([through, newest])?;
    tx.prepare_cached("UPDATE fts_indexed SET through = ?1")?
        .execute([newest])?;
    Ok(())
}

/// One caller's changes inside a savepoint, so a failure undoes only them.
fn apply_atomically(
    tx: &Transaction<'_>,
    changes: &[Change],
    limits: &Limits,
) -> Result<Vec<Outcome>, MemoryError> {
    tx.execute_batch("SAVEPOINT job")?;
    let applied: Result<Vec<Outcome>, MemoryError> =
        changes.iter().map(|c| apply(tx, c, limits)).collect();
    match applied {
        Ok(outcomes) => {
            tx.execute_batch("RELEASE job")?;
            Ok(outcomes)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// Refuses a record that breaks a limit, or an entity written as a plain record.
pub(crate) fn check_insert(
    store: Store,
    record: &NewRecord,
    limits: &Limits,
) -> Result<(), MemoryError> {
    record.check(limits)?;
    if store == Store::Knowledge
        && (record.kind.as_deref() == Some(crate::graph::ENTITY_KIND)
            || record
                .key
                .as_deref()
                .is_some_and(|k| k.starts_with(graph::KEY_PREFIX)))
    {
        return Err(MemoryError::invalid(
            "kind",
            "entities are written through the graph (an `entity` change), which keeps their names",
        ));
    }
    Ok(())
}

/// Refuses redefining `space` with another metric than it has.
pub(crate) fn check_metric(
    space: &str,
    existing: Metric,
    asked: Metric,
) -> Result<(), MemoryError> {
    if existing != asked {
        return Err(MemoryError::invalid(
            "metric",
            format!("space `{space}` exists with the {} metric", existing.name()),
        ));
    }
    Ok(())
}

/// Refuses a space without a name or with a width outside the limits.
pub(crate) fn check_space(
    space: &str,
    dimensions: usize,
    limits: &Limits,
) -> Result<(), MemoryError> {
    check_vector(
        &crate::Embedding {
            space: space.to_string(),
            vector: vec![0.0; dimensions.clamp(1, limits.max_dimensions + 1)],
        },
        limits,
    )?;
    if dimensions == 0 {
        return Err(MemoryError::invalid(
            "dimensions",
            "a space has at least one dimension",
        ));
    }
    Ok(())
}

fn apply(tx: &Transaction<'_>, change: &Change, limits: &Limits) -> Result<Outcome, MemoryError> {
    match change {
        Change::Insert { store, record } => {
            check_insert(*store, record, limits)?;
            let record = write_record(tx, *store, record)?;
            Ok(Outcome::Inserted { record })
        }
        Change::DefineSpace {
            space,
            dimensions,
            metric,
        } => {
            check_space(space, *dimensions, limits)?;
            let id = ensure_space(tx, space, *dimensions, *metric)?;
            let existing: String =
                tx.query_row("SELECT metric FROM spaces WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
            check_metric(space, Metric::parse(&existing)?, *metric)?;
            Ok(Outcome::SpaceDefined {
                space: space.clone(),
            })
        }
        Change::Delete { id } => {
            let deleted = tx.execute("DELETE FROM records WHERE id = ?1", [id])?;
            if deleted == 0 {
                return Err(MemoryError::NotFound(*id));
            }
            Ok(Outcome::Deleted { id: *id })
        }
        Change::Entity { entity } => Ok(Outcome::Entity {
            entity: graph::upsert_entity(tx, entity, limits)?,
        }),
        Change::Relate { relation } => Ok(Outcome::Related {
            relation: graph::relate(tx, relation, limits)?,
        }),
        Change::Unrelate { id } => {
            graph::unrelate(tx, *id)?;
            Ok(Outcome::Unrelated { id: *id })
        }
        Change::Merge { kept, merged } => Ok(Outcome::Merged {
            merge: graph::merge(tx, *kept, merged, limits)?,
        }),
    }
}

/// Writes `r` and returns it as stored (built from what was written, not read back).
fn write_record(tx: &Transaction<'_>, store: Store, r: &NewRecord) -> Result<Record, MemoryError> {
    let kind = r.kind.as_deref().unwrap_or(default_kind(store));
    let data = if r.data.is_null() {
        "{}".to_string()
    } else {
        r.data.to_string()
    };
    let tags = serde_json::Value::from(r.tags.clone()).to_string();
    let created_at = r.created_at.unwrap_or_else(now_ms);
    let existing: Option<i64> = match &r.key {
        Some(key) => tx
            .prepare_cached("SELECT id FROM records WHERE store = ?1 AND key = ?2")?
            .query_row(params![store.name(), key], |row| row.get(0))
            .optional()?,
        None => None,
    };
    let id = match existing {
        Some(id) => {
            tx.execute(
                "UPDATE records SET kind = ?2, text = ?3, data = ?4, tags = ?5, conversation = ?6,
                 source = ?7, role = ?8, created_at = ?9 WHERE id = ?1",
                params![id, kind, r.text, data, tags, r.conversation, r.source, r.role, created_at],
            )?;
            tx.execute("DELETE FROM vectors WHERE record_id = ?1", [id])?;
            id
        }
        None => tx
            .prepare_cached(
                "INSERT INTO records(store, kind, text, data, tags, conversation, source, role, key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
            )?
            .query_row(
                params![store.name(), kind, r.text, data, tags, r.conversation, r.source, r.role, r.key, created_at],
                |row| row.get(0),
            )?,
    };
    if let Some(embedding) = &r.embedding {
        let space = ensure_space(tx, &embedding.space, embedding.vector.len(), Metric::Cosine)?;
        tx.prepare_cached("INSERT INTO vectors(record_id, space_id, vector) VALUES (?1, ?2, ?3)")?
            .execute(params![id, space, encode(&embedding.vector)])?;
    }
    let data = if r.data.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        r.data.clone()
    };
    Ok(Record::written(id, store, kind, data, created_at, r))
}

/// The space's id, creating it on first use; a vector of another width is refused.
pub(crate) fn ensure_space(
    conn: &Connection,
    name: &str,
    dimensions: usize,
    metric: Metric,
) -> Result<i64, MemoryError> {
    let found: Option<(i64, usize)> = conn
        .prepare_cached("SELECT id, dimensions FROM spaces WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match found {
        Some((id, expected)) if expected == dimensions => Ok(id),
        Some((_, expected)) => Err(MemoryError::Dimensions {
            space: name.to_string(),
            expected,
            got: dimensions,
        }),
        None => Ok(conn.query_row(
            "INSERT INTO spaces(name, dimensions, metric) VALUES (?1, ?2, ?3) RETURNING id",
            params![name, dimensions, metric.name()],
            |r| r.get(0),
        )?),
    }
}
