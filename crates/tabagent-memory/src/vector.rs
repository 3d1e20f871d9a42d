//! HNSW indexes (hnswlib, see `hnsw.rs`), one per vector space, rebuilt or caught up from
//! SQLite.
//!
//! SQLite is the truth; an index is a cache of the `vectors` table. Each index remembers the
//! last `vector_log` entry it reflects. Opening loads the saved file when its epoch matches and
//! replays the log from there; a missing, damaged or too-old file (its entries pruned from the
//! log) means a rebuild from `vectors`. Before answering, an index replays what other
//! connections (another process, or this one's writer) committed since, so it never disagrees
//! with SQLite by more than writes still in flight. A saved file is loaded only when its
//! checksum matches the one in its sidecar, so a damaged file is rebuilt, never trusted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::hnsw::{unit, Hnsw, Shape};
use crate::MemoryError;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Record ids with a score or distance, best first.
pub(crate) type Ranked = Vec<(i64, f32)>;

/// How vectors in a space are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity (1 is the same direction).
    #[default]
    Cosine,
    /// Euclidean distance (0 is the same point).
    Euclidean,
}

impl Metric {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Metric, MemoryError> {
        match name {
            "cosine" => Ok(Metric::Cosine),
            "euclidean" => Ok(Metric::Euclidean),
            other => Err(MemoryError::invalid(
                "metric",
                format!("metric `{other}` is neither `cosine` nor `euclidean`"),
            )),
        }
    }

    /// The score a caller sees for the index's distance (`1 - cos`, or squared Euclidean):
    /// similarity for cosine, distance for Euclidean.
    pub(crate) fn score(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance,
            Metric::Euclidean => distance.max(0.0).sqrt(),
        }
    }
}

/// HNSW parameters, the same for every space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node (hnswlib's `M`).
    pub connectivity: usize,
    /// Candidates kept while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidates kept while searching (`ef`).
    pub expansion_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
        }
    }
}

/// A space as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpaceInfo {
    /// Its name.
    pub name: String,
    /// Width of its vectors.
    pub dimensions: usize,
    /// How they are compared.
    pub metric: Metric,
    /// Vectors in its index.
    pub indexed: usize,
}

/// One space's index and how far along the log it is.
struct SpaceIndex {
    name: String,
    dimensions: usize,
    metric: Metric,
    index: Hnsw,
    applied: i64,
    /// Changes made to `index` since it was built or loaded.
    changes: u64,
    /// The file on disk, if it holds what `index` held after that many `changes` (and its
    /// CRC): a save with nothing changed rewrites only the sidecar, not hundreds of megabytes.
    on_disk: std::sync::Mutex<Option<(u64, u32)>>,
}

/// What the index files are: a sidecar naming another format is ignored (the index rebuilt).
const FORMAT: &str = "hnswlib-0.8";

/// The sidecar saved beside an index file.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    format: String,
    epoch: String,
    applied: i64,
    dimensions: usize,
    metric: Metric,
    /// CRC-32 of the index file.
    crc32: u32,
}

/// Every space's index, for one database.
pub(crate) struct VectorIndexes {
    dir: PathBuf,
    params: HnswParams,
    epoch: String,
    spaces: HashMap<i64, SpaceIndex>,
}

fn index_error(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::Index(e.to_string())
}

impl VectorIndexes {
    /// Loads the indexes of the spaces in `conn`'s database, from `dir` where possible.
    pub(crate) fn open(
        conn: &mut Connection,
        dir: &Path,
        params: HnswParams,
    ) -> Result<Self, MemoryError> {
        std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
        tracing::debug!(
            kernels = crate::hnsw::kernels(),
            "vector index distance kernels"
        );
        let epoch = crate::schema::epoch(conn)?;
        let mut me = Self {
            dir: dir.to_path_buf(),
            params,
            epoch,
            spaces: HashMap::new(),
        };
        me.catch_up(conn)?;
        Ok(me)
    }

    /// Brings every index up to what `conn` sees committed.
    pub(crate) fn catch_up(&mut self, conn: &mut Connection) -> Result<(), MemoryError> {
        let tx = conn.transaction()?;
        self.catch_up_in(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// [`VectorIndexes::catch_up`] inside a transaction the caller holds.
    pub(crate) fn catch_up_in(&mut self, tx: &Connection) -> Result<(), MemoryError> {
        let epoch = crate::schema::epoch(tx)?;
        if epoch != self.epoch {
            tracing::info!("the memory database was restored; rebuilding vector indexes");
            self.spaces.clear();
            self.epoch = epoch;
        }
        let pruned = pruned_through(tx)?;
        let rows: Vec<(i64, String, usize, String)> = tx
            .prepare("SELECT id, name, dimensions, metric FROM spaces")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (id, name, dimensions, metric) in rows {
            let stale = self.spaces.get(&id).is_some_and(|s| s.applied < pruned);
            if stale || !self.spaces.contains_key(&id) {
                let metric = Metric::parse(&metric)?;
                let space = self.load_or_build(tx, id, name, dimensions, metric, pruned)?;
                self.spaces.insert(id, space);
            }
        }
        let from = self
            .spaces
            .values()
            .map(|s| s.applied)
            .min()
            .unwrap_or(i64::MAX);
        if from < i64::MAX {
            let mut log = tx.prepare(
                "SELECT l.seq, l.space_id, l.record_id, l.added, v.vector
                 FROM vector_log l LEFT JOIN vectors v
                   ON l.added = 1 AND v.record_id = l.record_id AND v.space_id = l.space_id
                 WHERE l.seq > ?1 ORDER BY l.seq",
            )?;
            let mut rows = log.query([from])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let Some(space) = self.spaces.get_mut(&row.get::<_, i64>(1)?) else {
                    continue;
                };
                if seq <= space.applied {
                    continue;
                }
                let key = row.get::<_, i64>(2)? as u64;
                // A vector added then deleted before this replay has no row left: remove it.
                match (row.get::<_, i64>(3)?, row.get::<_, Option<Vec<u8>>>(4)?) {
                    (1, Some(blob)) => space.index.add(key, &decode(&blob)).map_err(index_error)?,
                    _ => {
                        space.index.remove(key).map_err(index_error)?;
                    }
                }
                space.changes += 1;
                space.applied = seq;
            }
        }
        let last = last_seq(tx)?;
        for space in self.spaces.values_mut() {
            space.applied = space.applied.max(last);
        }
        Ok(())
    }

    fn load_or_build(
        &self,
        conn: &Connection,
        id: i64,
        name: String,
        dimensions: usize,
        metric: Metric,
        pruned: i64,
    ) -> Result<SpaceIndex, MemoryError> {
        let shape = self.shape(dimensions, metric);
        let (file, sidecar) = self.files(id);
        let saved: Option<Saved> = std::fs::read(&sidecar)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(saved) = saved.filter(|s| {
            s.format == FORMAT
                && s.epoch == self.epoch
                && s.applied >= pruned
                && s.dimensions == dimensions
                && s.metric == metric
        }) {
            let loaded = match file_crc32(&file) {
                Ok(crc) if crc == saved.crc32 => Hnsw::load(&file, shape).map_err(index_error),
                Ok(_) => Err(MemoryError::Index("its checksum does not match".into())),
                Err(e) => Err(MemoryError::io(&file, e)),
            };
            match loaded {
                Ok(index) => {
                    return Ok(SpaceIndex {
                        name,
                        dimensions,
                        metric,
                        index,
                        applied: saved.applied,
                        changes: 0,
                        on_disk: std::sync::Mutex::new(Some((0, saved.crc32))),
                    });
                }
                Err(e) => {
                    tracing::warn!(space = %name, error = %e, "saved index unusable; rebuilding")
                }
            }
        }
        let applied = last_seq(conn)?;
        let count: usize = conn.query_row(
            "SELECT count(*) FROM vectors WHERE space_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let mut index = Hnsw::new(shape, count.max(1024)).map_err(index_error)?;
        let mut rows = conn.prepare("SELECT record_id, vector FROM vectors WHERE space_id = ?1")?;
        let mut rows = rows.query([id])?;
        while let Some(row) = rows.next()? {
            let key = row.get::<_, i64>(0)? as u64;
            index
                .add(key, &decode(&row.get::<_, Vec<u8>>(1)?))
                .map_err(index_error)?;
        }
        tracing::debug!(space = %name, vectors = count, "built a vector index from SQLite");
        Ok(SpaceIndex {
            name,
            dimensions,
            metric,
            index,
            applied,
            changes: 0,
            on_disk: std::sync::Mutex::new(None),
        })
    }

    fn shape(&self, dimensions: usize, metric: Metric) -> Shape {
        Shape {
            dimensions,
            metric,
            connectivity: self.params.connectivity,
            expansion_add: self.params.expansion_add,
            expansion_search: self.params.expansion_search,
        }
    }

    fn files(&self, id: i64) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("space-{id}.hnsw")),
            self.dir.join(format!("space-{id}.json")),
        )
    }

    /// Writes every index to disk (each file replaced whole), so that the next open replays
    /// only what came after.
    pub(crate) fn save(&self) -> Result<(), MemoryError> {
        for (id, space) in &self.spaces {
            let (file, sidecar) = self.files(*id);
            let mut on_disk = space
                .on_disk
                .lock()
                .map_err(|_| MemoryError::Index("an index save lock is poisoned".into()))?;
            let crc32 = match *on_disk {
                Some((changes, crc32)) if changes == space.changes && file.exists() => crc32,
                _ => {
                    let tmp = file.with_extension("hnsw.tmp");
                    space.index.save(&tmp).map_err(index_error)?;
                    let crc32 = file_crc32(&tmp).map_err(|e| MemoryError::io(&tmp, e))?;
                    std::fs::rename(&tmp, &file).map_err(|e| MemoryError::io(&file, e))?;
                    *on_disk = Some((space.changes, crc32));
                    crc32
                }
            };
            // Files of the index library used before hnswlib are no use to anyone.
            let _ = std::fs::remove_file(self.dir.join(format!("space-{id}.usearch")));
            let saved = Saved {
                format: FORMAT.to_string(),
                epoch: self.epoch.clone(),
                applied: space.applied,
                dimensions: space.dimensions,
                metric: space.metric,
                crc32,
            };
            let json = serde_json::to_vec(&saved).map_err(|e| MemoryError::Index(e.to_string()))?;
            let tmp = sidecar.with_extension("json.tmp");
            std::fs::write(&tmp, json).map_err(|e| MemoryError::io(&tmp, e))?;
            std::fs::rename(&tmp, &sidecar).map_err(|e| MemoryError::io(&sidecar, e))?;
        }
        Ok(())
    }

    /// Whether commits this index has not seen exist: log entries past it, a new space, or a
    /// restore. One statement (one read transaction), since every search asks.
    pub(crate) fn is_behind(&self, conn: &Connection) -> Result<bool, MemoryError> {
        let mut stmt = conn.prepare_cached(
            "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'),
                    (SELECT count(*) FROM spaces),
                    (SELECT value FROM memory_meta WHERE name = 'epoch')",
        )?;
        let mut rows = stmt.query([])?;
        let Some(row) = rows.next()? else {
            return Ok(true);
        };
        let last = row.get::<_, Option<i64>>(0)?.unwrap_or(0);
        let spaces = row.get::<_, usize>(1)?;
        let same_epoch = matches!(
            row.get_ref(2)?,
            rusqlite::types::ValueRef::Text(epoch) if epoch == self.epoch.as_bytes()
        );
        Ok(self.spaces.values().any(|s| s.applied < last)
            || spaces != self.spaces.len()
            || !same_epoch)
    }

    /// The oldest log entry any saved index still needs.
    pub(crate) fn applied_floor(&self) -> Option<i64> {
        self.spaces.values().map(|s| s.applied).min()
    }

    /// The `count` nearest records in `space` accepted by `keep`, with the index's distances.
    pub(crate) fn nearest(
        &self,
        space: &str,
        query: &[f32],
        count: usize,
        keep: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Option<(Metric, Ranked)>, MemoryError> {
        let Some(s) = self.spaces.values().find(|s| s.name == space) else {
            return Ok(None);
        };
        if query.len() != s.dimensions {
            return Err(MemoryError::Dimensions {
                space: space.to_string(),
                expected: s.dimensions,
                got: query.len(),
            });
        }
        let found = s.index.search(query, count, keep).map_err(index_error)?;
        Ok(Some((
            s.metric,
            found.into_iter().map(|(k, d)| (k as i64, d)).collect(),
        )))
    }

    /// The metric and width of `space`, if it exists.
    pub(crate) fn space(&self, space: &str) -> Option<(Metric, usize)> {
        self.spaces
            .values()
            .find(|s| s.name == space)
            .map(|s| (s.metric, s.dimensions))
    }

    /// Each space with the number of vectors its index holds.
    pub(crate) fn spaces(&self) -> Vec<SpaceInfo> {
        let mut out: Vec<SpaceInfo> = self
            .spaces
            .values()
            .map(|s| SpaceInfo {
                name: s.name.clone(),
                dimensions: s.dimensions,
                metric: s.metric,
                indexed: s.index.len(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `space`'s index holds exactly `keys`, each with the vector SQLite has.
    pub(crate) fn agrees(&self, conn: &Connection) -> Result<Vec<String>, MemoryError> {
        let mut problems = Vec::new();
        for (id, s) in &self.spaces {
            let mut stmt =
                conn.prepare("SELECT record_id, vector FROM vectors WHERE space_id = ?1")?;
            let mut rows = stmt.query([id])?;
            let mut count = 0usize;
            while let Some(row) = rows.next()? {
                count += 1;
                let key = row.get::<_, i64>(0)? as u64;
                let expected = decode(&row.get::<_, Vec<u8>>(1)?);
                let Some(found) = s.index.get(key) else {
                    problems.push(format!(
                        "space `{}`: record {key} missing from the index",
                        s.name
                    ));
                    continue;
                };
                if !same_vector(&found, &expected, s.metric) {
                    problems.push(format!(
                        "space `{}`: record {key} has a different vector in the index",
                        s.name
                    ));
                }
            }
            if s.index.len() != count {
                problems.push(format!(
                    "space `{}`: the index holds {} vectors, SQLite {count}",
                    s.name,
                    s.index.len()
                ));
            }
        }
        Ok(problems)
    }
}

/// Cosine indexes keep unit vectors, so compare directions there.
fn same_vector(a: &[f32], b: &[f32], metric: Metric) -> bool {
    let (a, b) = match metric {
        Metric::Cosine => (unit(a), unit(b)),
        Metric::Euclidean => (a.to_vec(), b.to_vec()),
    };
    a.iter()
        .zip(&b)
        .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
}

fn file_crc32(path: &Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..n]);
    }
}

/// Vectors are stored as little-endian `f32`s.
pub(crate) fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn decode(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn last_seq(conn: &Connection) -> Result<i64, MemoryError> {
    // `sqlite_sequence` keeps the highest seq even after the log is pruned.
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn pruned_through(conn: &Connection) -> Result<i64, MemoryError> {
    Ok(conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM memory_meta WHERE name = 'log_pruned_through'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Drops log entries every saved index has already applied.
pub(crate) fn prune_log(conn: &Connection, through: i64) -> Result<(), MemoryError> {
    conn.execute("DELETE FROM vector_log WHERE seq <= ?1", [through])?;
    conn.execute(
        "INSERT INTO memory_meta(name, value) VALUES ('log_pruned_through', ?1)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value
         WHERE CAST(memory_meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        [through.to_string()],
    )?;
    Ok(())
}
