//! The outbox: every event is first written to a SQLite file in the data directory, then sent
//! to Redis and deleted. An event tabagent has acknowledged (the write behind it answered) is
//! kept through Redis restarts and tabagent's own; Redis may see an event twice (a crash
//! between sending and deleting) but never miss one, and each carries its outbox `event_id`
//! so consumers can tell.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};

/// One event waiting to be sent.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its place in the outbox (increasing).
    pub id: i64,
    /// The stream's suffix (`memory`, `ingestion`, `chat`).
    pub stream: String,
    /// What happened (`memory.write`, `document.ingested`, …).
    pub kind: String,
    /// The event as JSON.
    pub data: String,
    /// When it happened (milliseconds since the epoch).
    pub time_ms: i64,
}

/// The outbox file, shared by the server and `tabagent ingest` (WAL: one writer at a time,
/// readers alongside).
pub struct Outbox {
    connection: Mutex<Connection>,
    max: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, keeping at most `max` events.
    pub fn open(path: &Path, max: u64) -> rusqlite::Result<Self> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        // FULL: an acknowledged event survives a power cut, not only a crash.
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 stream TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 data TEXT NOT NULL,
                 time_ms INTEGER NOT NULL
             );",
        )?;
        Ok(Self {
            connection: Mutex::new(connection),
            max,
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps an event; returns how many older events were dropped to stay within the bound.
    pub fn push(
        &self,
        stream: &str,
        kind: &str,
        data: &str,
        time_ms: i64,
    ) -> rusqlite::Result<u64> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO outbox (stream, kind, data, time_ms) VALUES (?1, ?2, ?3, ?4)",
            params![stream, kind, data, time_ms],
        )?;
        // Only the oldest events are ever deleted, so the ids kept are a run without gaps.
        let kept: i64 =
            transaction.query_row("SELECT MAX(id) - MIN(id) + 1 FROM outbox", [], |row| {
                row.get(0)
            })?;
        let over = (kept as u64).saturating_sub(self.max);
        if over > 0 {
            transaction.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1)",
                params![over as i64],
            )?;
        }
        transaction.commit()?;
        Ok(over)
    }

    /// The oldest `limit` events.
    pub fn oldest(&self, limit: usize) -> rusqlite::Result<Vec<Pending>> {
        let connection = self.connection();
        let mut statement = connection.prepare_cached(
            "SELECT id, stream, kind, data, time_ms FROM outbox ORDER BY id LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit as i64], |row| {
            Ok(Pending {
                id: row.get(0)?,
                stream: row.get(1)?,
                kind: row.get(2)?,
                data: row.get(3)?,
                time_ms: row.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// Forgets the events up to `last` (they are in Redis).
    pub fn sent(&self, last: i64) -> rusqlite::Result<()> {
        self.connection()
            .execute("DELETE FROM outbox WHERE id <= ?1", params![last])
            .map(drop)
    }

    /// How many events wait.
    pub fn waiting(&self) -> rusqlite::Result<u64> {
        let count: Option<i64> =
            self.connection()
                .query_row("SELECT MAX(id) - MIN(id) + 1 FROM outbox", [], |row| {
                    row.get(0)
                })?;
        Ok(count.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_order_and_the_oldest_go_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("events.sqlite"), 3).unwrap();
        for n in 0..5 {
            let dropped = outbox
                .push("memory", "memory.write", &format!("{{\"n\":{n}}}"), n)
                .unwrap();
            assert_eq!(dropped, u64::from(n >= 3));
        }
        let oldest = outbox.oldest(10).unwrap();
        let data: Vec<&str> = oldest.iter().map(|p| p.data.as_str()).collect();
        assert_eq!(data, ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
        outbox.sent(oldest[1].id).unwrap();
        assert_eq!(outbox.waiting().unwrap(), 1);
        // Reopened, it still holds what was not sent, and numbers on from where it was.
        drop(outbox);
        let outbox = Outbox::open(&dir.path().join("events.sqlite"), 3).unwrap();
        outbox.push("chat", "chat.turn", "{}", 9).unwrap();
        let left = outbox.oldest(10).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].data, "{\"n\":4}");
        assert!(left[1].id > left[0].id);
    }
}
