//! The SQLite schema and connection settings.
//!
//! SQLite is the source of truth. `records` holds every store's records; `records_fts` is an
//! FTS5 index over their text, kept in step by the writer (new records, once per commit) and
//! by triggers (text changed or deleted); `vectors` holds each record's vector in
//! its space; `vector_log` lists every vector change in commit order so that an HNSW index
//! built earlier (saved to disk, or held by another process) can catch up instead of being
//! rebuilt; `memory_meta` holds the database's epoch, which a restore changes.

use rusqlite::Connection;

use crate::MemoryError;

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit is on disk before it is acknowledged (`synchronous = FULL`): survives power
    /// loss. Concurrent writes share one commit, so this costs little under load.
    #[default]
    Full,
    /// Commits reach the OS before they are acknowledged and the disk at checkpoints
    /// (`synchronous = NORMAL`): survives the process being killed, not a power cut.
    Normal,
}

pub(crate) const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = r#"
CREATE TABLE records (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    store        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    text         TEXT NOT NULL,
    data         TEXT NOT NULL DEFAULT '{}',
    tags         TEXT NOT NULL DEFAULT '[]',
    conversation TEXT,
    source       TEXT,
    role         TEXT,
    key          TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX records_store_time ON records(store, created_at, id);
CREATE INDEX records_conversation ON records(conversation, created_at, id) WHERE conversation IS NOT NULL;
CREATE UNIQUE INDEX records_key ON records(store, key) WHERE key IS NOT NULL;

CREATE VIRTUAL TABLE records_fts USING fts5(
    text, content='records', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER records_fts_insert AFTER INSERT ON records BEGIN
    INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER records_fts_update AFTER UPDATE OF text ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
END;

CREATE TABLE spaces (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    dimensions INTEGER NOT NULL,
    metric     TEXT NOT NULL
);
CREATE TABLE vectors (
    record_id INTEGER PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
    space_id  INTEGER NOT NULL REFERENCES spaces(id),
    vector    BLOB NOT NULL
);
CREATE INDEX vectors_space ON vectors(space_id);
CREATE TABLE vector_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    space_id  INTEGER NOT NULL,
    record_id INTEGER NOT NULL,
    added     INTEGER NOT NULL
);
CREATE TRIGGER vectors_log_insert AFTER INSERT ON vectors BEGIN
    INSERT INTO vector_log(space_id, record_id, added) VALUES (new.space_id, new.record_id, 1);
END;
CREATE TRIGGER vectors_log_delete AFTER DELETE ON vectors BEGIN
    INSERT INTO vector_log(space_id, record_id, added) VALUES (old.space_id, old.record_id, 0);
END;

CREATE TABLE memory_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Version 2: the knowledge graph. Entities are knowledge records of kind `entity`;
/// `entity_names` finds them by any normalized name or alias; relations cite the record they
/// were read from (`evidence`) and go when either end goes.
const GRAPH: &str = r#"
CREATE TABLE entity_names (
    name   TEXT NOT NULL,
    entity INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    PRIMARY KEY (name, entity)
) WITHOUT ROWID;
CREATE INDEX entity_names_entity ON entity_names(entity);
CREATE TABLE relations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    subject    INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    relation   TEXT NOT NULL,
    object     INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    evidence   INTEGER REFERENCES records(id) ON DELETE SET NULL,
    source     TEXT,
    confidence REAL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX relations_edge ON relations(subject, relation, object, ifnull(evidence, 0));
CREATE INDEX relations_object ON relations(object, relation);
CREATE INDEX relations_evidence ON relations(evidence) WHERE evidence IS NOT NULL;
-- When evidence goes its relations stay, uncited (SET NULL above), unless the same relation
-- is already held uncited: then the cited copy goes, rather than break the unique index.
CREATE TRIGGER relations_evidence_gone BEFORE DELETE ON records BEGIN
    DELETE FROM relations WHERE evidence = old.id AND EXISTS (
        SELECT 1 FROM relations d WHERE d.evidence IS NULL AND d.subject = relations.subject
            AND d.relation = relations.relation AND d.object = relations.object);
END;
"#;

/// Version 3: new records' text is indexed once per commit, by the writer, in one statement
/// (see `writer::index_new_text`), instead of by a trigger row by row. FTS5 writes its pending
/// terms to disk at every statement savepoint, so the trigger made one tiny segment per record
/// (then merged them): inserts were four times slower. `fts_indexed.through` is the newest
/// record id whose text is indexed; a record above it has no index entries yet, so deleting
/// or changing it must not ask FTS5 to remove any (that would corrupt the index). Idempotent,
/// so that a database from any earlier version reaches this one.
const TEXT_INDEXED_PER_COMMIT: &str = r#"
CREATE TABLE IF NOT EXISTS fts_indexed (through INTEGER NOT NULL);
INSERT INTO fts_indexed(through)
    SELECT ifnull(max(id), 0) FROM records WHERE NOT EXISTS (SELECT 1 FROM fts_indexed);
DROP TRIGGER IF EXISTS records_fts_insert;
DROP TRIGGER IF EXISTS records_fts_delete;
DROP TRIGGER IF EXISTS records_fts_update;
CREATE TRIGGER records_fts_delete AFTER DELETE ON records
WHEN old.id <= (SELECT through FROM fts_indexed) BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER records_fts_update AFTER UPDATE OF text ON records
WHEN old.id <= (SELECT through FROM fts_indexed) BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
END;
"#;

/// The first 256 MiB of the database are read through a memory map: a point read then copies
/// no pages out of the kernel (about 20% more reads per second). Writes still go through
/// `write()`, so a stray pointer cannot damage the file.
const MMAP_BYTES: u64 = 256 << 20;

/// Settings every connection gets.
pub(crate) fn configure(conn: &Connection, durability: Durability) -> Result<(), MemoryError> {
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA mmap_size = {MMAP_BYTES};"
    ))?;
    Ok(())
}

/// Creates the schema in a new database, or checks an existing one is ours and current.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MemoryError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // Each version's step, applied in order from the one after the database's.
    let steps: [&str; SCHEMA_VERSION as usize] = [SCHEMA, GRAPH, TEXT_INDEXED_PER_COMMIT];
    match version {
        0..SCHEMA_VERSION => {
            let tx = conn.transaction()?;
            if version == 0 {
                let tables: i64 =
                    tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
                if tables > 0 {
                    return Err(MemoryError::Corrupt(
                        "the file is an SQLite database that tabagent did not create".to_string(),
                    ));
                }
            }
            for step in &steps[version as usize..] {
                tx.execute_batch(step)?;
            }
            if version == 0 {
                tx.execute(
                    "INSERT INTO memory_meta(name, value) VALUES ('epoch', ?1)",
                    [uuid::Uuid::new_v4().to_string()],
                )?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
            tx.commit()?;
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(MemoryError::Corrupt(format!(
            "schema version {other} is newer than this tabagent understands ({SCHEMA_VERSION})"
        ))),
    }
}

/// The database's epoch: changes when a backup is restored over it, so that vector indexes
/// built against the old contents know to start again.
pub(crate) fn epoch(conn: &Connection) -> Result<String, MemoryError> {
    Ok(conn
        .prepare_cached("SELECT value FROM memory_meta WHERE name = 'epoch'")?
        .query_row([], |r| r.get(0))?)
}
