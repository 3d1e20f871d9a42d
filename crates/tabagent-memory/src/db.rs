//! Opening a memory database, and everything a caller does with it.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::record::{check_limit, Filter, Limits, Order, Page};
use crate::schema::{self, Durability};
use crate::vector::{self, HnswParams, SpaceInfo, VectorIndexes};
use crate::writer::{Change, Done, Job, Outcome, Work, Writer};
use crate::{MemoryError, NewRecord, Record, Store};

/// Where a memory lives and how it behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// Where vector indexes are saved (a cache: deleting it costs a rebuild, nothing else).
    pub index_dir: PathBuf,
    /// How hard a commit works to survive a crash.
    pub durability: Durability,
    /// HNSW parameters.
    pub hnsw: HnswParams,
    /// Caps on records.
    pub limits: Limits,
    /// Vector changes between saves of the indexes (and prunes of the change log).
    pub save_every: u64,
}

impl MemoryConfig {
    /// A memory in `dir`: `memory.sqlite` and `memory-index/`, with the default settings.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            path: dir.join("memory.sqlite"),
            index_dir: dir.join("memory-index"),
            durability: Durability::default(),
            hnsw: HnswParams::default(),
            limits: Limits::default(),
            save_every: 50_000,
        }
    }
}

/// Records per store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStats {
    /// The store.
    pub store: Store,
    /// Its records.
    pub records: u64,
    /// Those with a vector.
    pub with_vectors: u64,
}

impl StoreStats {
    /// All seven stores from (records, with vectors) counts by store name; absent is empty.
    pub(crate) fn all(
        counts: &mut std::collections::HashMap<String, (u64, u64)>,
    ) -> Vec<StoreStats> {
        Store::ALL
            .into_iter()
            .map(|store| {
                let (records, with_vectors) = counts.remove(store.name()).unwrap_or((0, 0));
                StoreStats {
                    store,
                    records,
                    with_vectors,
                }
            })
            .collect()
    }
}

/// What a memory holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Per store, all seven.
    pub stores: Vec<StoreStats>,
    /// The vector spaces.
    pub spaces: Vec<SpaceInfo>,
    /// Bytes of the SQLite file.
    pub bytes: u64,
    /// The durability setting in force.
    pub durability: Durability,
}

/// An open memory database. Cheap to share (`Arc`); every method blocks, so async callers run
/// them on a blocking thread.
pub struct Memory {
    config: MemoryConfig,
    writer: Option<mpsc::SyncSender<Job>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Read connections in slots: a reader takes a free slot without waiting, and threads
    /// start at different slots, so readers do not contend on one lock.
    readers: Vec<Mutex<Option<Connection>>>,
    indexes: Arc<RwLock<VectorIndexes>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("path", &self.config.path)
            .finish_non_exhaustive()
    }
}

pub(crate) const RECORD_COLUMNS: &str = "r.id, r.store, r.kind, r.text, r.data, r.tags, \
     r.conversation, r.source, r.role, r.key, r.created_at, \
     (SELECT s.name FROM vectors v JOIN spaces s ON s.id = v.space_id WHERE v.record_id = r.id)";

/// A record from a row of [`RECORD_COLUMNS`].
pub(crate) fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let store: String = row.get(1)?;
    let data: String = row.get(4)?;
    let tags: String = row.get(5)?;
    Ok(Record {
        id: row.get(0)?,
        // The schema only ever stores names from `Store::name`.
        store: Store::parse(&store).unwrap_or(Store::Meta),
        kind: row.get(2)?,
        text: row.get(3)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        conversation: row.get(6)?,
        source: row.get(7)?,
        role: row.get(8)?,
        key: row.get(9)?,
        created_at: row.get(10)?,
        space: row.get(11)?,
    })
}

pub(crate) fn read_record(conn: &Connection, id: i64) -> Result<Option<Record>, MemoryError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.id = ?1")
    });
    Ok(conn
        .prepare_cached(&SQL)?
        .query_row([id], row_to_record)
        .optional()?)
}

fn open_connection(config: &MemoryConfig) -> Result<Connection, MemoryError> {
    let conn = Connection::open_with_flags(
        &config.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    schema::configure(&conn, config.durability)?;
    // Point reads and writes reuse their statements instead of parsing SQL each time.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Read connections kept open.
const READER_SLOTS: usize = 8;

static NEXT_READER_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// The slot this thread tries first.
    static READER_SLOT: usize =
        NEXT_READER_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % READER_SLOTS;
}

impl Memory {
    /// Opens (creating if needed) the memory at `config.path`, loading or rebuilding its
    /// vector indexes.
    pub fn open(config: &MemoryConfig) -> Result<Memory, MemoryError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
        }
        let mut conn = open_connection(config)?;
        schema::migrate(&mut conn)?;
        let indexes = VectorIndexes::open(&mut conn, &config.index_dir, config.hnsw)?;
        let indexes = Arc::new(RwLock::new(indexes));
        let (sender, jobs) = mpsc::sync_channel::<Job>(1024);
        let writer = Writer {
            saved_at: vector::last_seq(&conn)?,
            conn,
            limits: config.limits,
            indexes: Arc::clone(&indexes),
            save_every: config.save_every.max(1) as i64,
        };
        let writer_thread = std::thread::Builder::new()
            .name("memory-writer".to_string())
            .spawn(move || writer.run(jobs))
            .map_err(|e| MemoryError::io(&config.path, e))?;
        Ok(Memory {
            config: config.clone(),
            writer: Some(sender),
            writer_thread: Some(writer_thread),
            readers: (0..READER_SLOTS).map(|_| Mutex::new(None)).collect(),
            indexes,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// Applies `changes` all together or not at all; returns once they are committed.
    pub fn apply(&self, changes: Vec<Change>) -> Result<Vec<Outcome>, MemoryError> {
        crate::record::check_batch(&changes, &self.config.limits)?;
        match self.run_on_writer(Work::Changes(changes))? {
            Done::Changed(outcomes) => Ok(outcomes),
            _ => Err(MemoryError::Commit(
                "the writer answered something else".to_string(),
            )),
        }
    }

    /// Hands `work` to the writer thread and waits for it.
    pub(crate) fn run_on_writer(&self, work: Work) -> Result<Done, MemoryError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let writer = self.writer.as_ref().ok_or(MemoryError::Closed)?;
        writer
            .send(Job { work, reply })
            .map_err(|_| MemoryError::Closed)?;
        answer.recv().map_err(|_| MemoryError::Closed)?
    }

    /// Writes one record.
    pub fn insert(&self, store: Store, record: NewRecord) -> Result<Record, MemoryError> {
        match self.apply(vec![Change::Insert { store, record }])?.pop() {
            Some(Outcome::Inserted { record }) => Ok(record),
            _ => Err(MemoryError::Commit(
                "the writer returned no record".to_string(),
            )),
        }
    }

    /// Deletes one record (and its vector).
    pub fn delete(&self, id: i64) -> Result<(), MemoryError> {
        self.apply(vec![Change::Delete { id }]).map(|_| ())
    }

    /// Runs `read` on a pooled read connection.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, MemoryError>,
    ) -> Result<T, MemoryError> {
        let first = READER_SLOT.with(|slot| *slot);
        for i in 0..READER_SLOTS {
            let mut slot = match self.readers[(first + i) % READER_SLOTS].try_lock() {
                Ok(slot) => slot,
                // A reader that panicked left its connection as it was: still usable.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(open_connection(&self.config)?),
            };
            return read(conn);
        }
        // Every slot busy: a connection for this read alone.
        read(&mut open_connection(&self.config)?)
    }

    /// Brings the vector indexes up to date with commits from other connections and processes.
    pub(crate) fn indexes_caught_up(
        &self,
        conn: &mut Connection,
    ) -> Result<std::sync::RwLockReadGuard<'_, VectorIndexes>, MemoryError> {
        let poisoned = || MemoryError::Index("the vector index lock is poisoned".to_string());
        let behind = {
            let indexes = self.indexes.read().map_err(|_| poisoned())?;
            indexes.is_behind(conn)?
        };
        if behind {
            self.indexes
                .write()
                .map_err(|_| poisoned())?
                .catch_up(conn)?;
        }
        self.indexes.read().map_err(|_| poisoned())
    }

    /// One record.
    pub fn get(&self, id: i64) -> Result<Record, MemoryError> {
        self.read(|conn| read_record(conn, id)?.ok_or(MemoryError::NotFound(id)))
    }

    /// The record with `key` in `store`.
    pub fn get_by_key(&self, store: Store, key: &str) -> Result<Option<Record>, MemoryError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM records r WHERE r.store = ?1 AND r.key = ?2"
                    ),
                    [store.name(), key],
                    row_to_record,
                )
                .optional()?)
        })
    }

    /// Records matching `filter`, a page at a time (`after` is the previous page's `next`).
    pub fn list(
        &self,
        filter: &Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> Result<Page, MemoryError> {
        filter.check(&self.config.limits)?;
        check_limit(limit)?;
        let (mut clause, mut params) = filter.sql();
        let (cmp, dir) = match order {
            Order::Newest => ("<", "DESC"),
            Order::Oldest => (">", "ASC"),
        };
        if let Some(after) = after {
            // The cursor is a record id; pages continue from its (created_at, id).
            clause.push_str(&format!(
                " AND (r.created_at, r.id) {cmp} (SELECT created_at, id FROM records WHERE id = ?)"
            ));
            params.push(rusqlite::types::Value::Integer(after));
        }
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records r WHERE {clause}
             ORDER BY r.created_at {dir}, r.id {dir} LIMIT {}",
            limit + 1
        );
        self.read(|conn| {
            if let Some(after) = after {
                read_record(conn, after)?.ok_or_else(|| {
                    MemoryError::invalid("after", format!("no record {after} to continue from"))
                })?;
            }
            let records: Vec<Record> = conn
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(params), row_to_record)?
                .collect::<Result<_, _>>()?;
            Ok(Page::cut(records, limit))
        })
    }

    /// What the memory holds.
    pub fn stats(&self) -> Result<Stats, MemoryError> {
        let bytes = std::fs::metadata(&self.config.path).map_or(0, |m| m.len());
        self.read(|conn| {
            let mut counts: std::collections::HashMap<String, (u64, u64)> = conn
                .prepare(
                    "SELECT r.store, count(*), count(v.record_id) FROM records r
                     LEFT JOIN vectors v ON v.record_id = r.id GROUP BY r.store",
                )?
                .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect::<Result<_, _>>()?;
            let stores = StoreStats::all(&mut counts);
            let spaces = self.indexes_caught_up(conn)?.spaces();
            Ok(Stats {
                stores,
                spaces,
                bytes,
                durability: self.config.durability,
            })
        })
    }

    /// Saves the vector indexes now (they are also saved every `save_every` changes and on
    /// close), so that the next open replays little.
    pub fn save_indexes(&self) -> Result<(), MemoryError> {
        self.read(|conn| {
            let indexes = self.indexes_caught_up(conn)?;
            save_and_prune(&indexes, conn)
        })
    }
}

pub(crate) fn save_and_prune(
    indexes: &VectorIndexes,
    conn: &Connection,
) -> Result<(), MemoryError> {
    indexes.save()?;
    if let Some(floor) = indexes.applied_floor() {
        vector::prune_log(conn, floor)?;
    }
    Ok(())
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.save_indexes() {
            tracing::warn!(error = %e, "could not save vector indexes on close");
        }
    }
}
