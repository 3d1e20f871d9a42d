//! Online backup to one file, restore, and integrity checks.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, MAIN_DB};
use serde::Serialize;

use crate::{Memory, MemoryError};

/// What [`Memory::check`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// Whether nothing is wrong.
    pub ok: bool,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// Records checked.
    pub records: u64,
    /// Vectors checked against the index.
    pub vectors: u64,
}

impl Memory {
    /// Copies the database, consistent as of one moment, to `dest` (which must not exist)
    /// while reads and writes go on. Vector indexes are not copied: they are rebuilt from it.
    pub fn backup(&self, dest: &Path) -> Result<u64, MemoryError> {
        if dest.exists() {
            return Err(MemoryError::invalid(
                "path",
                format!("{} exists; choose a new file", dest.display()),
            ));
        }
        let partial = partial_path(dest);
        let _ = std::fs::remove_file(&partial);
        self.read(|conn| {
            conn.backup(MAIN_DB, &partial, None::<fn(rusqlite::backup::Progress)>)?;
            Ok(())
        })?;
        std::fs::rename(&partial, dest).map_err(|e| MemoryError::io(dest, e))?;
        Ok(std::fs::metadata(dest).map_or(0, |m| m.len()))
    }

    /// Replaces the whole memory with the backup at `src`, after checking it is a sound
    /// tabagent memory. Writes wait while it runs; vector indexes are rebuilt after it.
    pub fn restore(&self, src: &Path) -> Result<(), MemoryError> {
        check_backup(src)?;
        self.run_on_writer(crate::writer::Work::Restore(src.to_path_buf()))
            .map(|_| ())
    }

    /// Checks SQLite's integrity, the full-text index, and that every vector index holds
    /// exactly SQLite's vectors.
    pub fn check(&self) -> Result<CheckReport, MemoryError> {
        self.read(|conn| {
            let mut problems = integrity(conn)?;
            if let Err(e) = conn.execute(
                "INSERT INTO records_fts(records_fts) VALUES ('integrity-check')",
                [],
            ) {
                problems.push(format!("full-text index: {e}"));
            }
            let records: u64 = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
            let vectors: u64 = conn.query_row("SELECT count(*) FROM vectors", [], |r| r.get(0))?;
            if let crate::writer::Done::Checked(found) =
                self.run_on_writer(crate::writer::Work::Check)?
            {
                problems.extend(found);
            }
            Ok(CheckReport {
                ok: problems.is_empty(),
                problems,
                records,
                vectors,
            })
        })
    }
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

fn integrity(conn: &Connection) -> Result<Vec<String>, MemoryError> {
    let mut problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|line| line != "ok")
        .collect();
    let dangling: i64 =
        conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })?;
    if dangling > 0 {
        problems.push(format!(
            "{dangling} rows point at records that do not exist"
        ));
    }
    Ok(problems)
}

/// Refuses a file that is not a sound tabagent memory of this version.
fn check_backup(src: &Path) -> Result<(), MemoryError> {
    let bad = |why: String| MemoryError::invalid("path", format!("{}: {why}", src.display()));
    if !src.is_file() {
        return Err(bad("no such file".to_string()));
    }
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| bad(e.to_string()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| bad(format!("not an SQLite database ({e})")))?;
    if !(1..=crate::schema::SCHEMA_VERSION).contains(&version) {
        return Err(bad(format!(
            "not a tabagent memory backup this version can read (schema {version})"
        )));
    }
    let problems = integrity(&conn).map_err(|e| bad(e.to_string()))?;
    if !problems.is_empty() {
        return Err(bad(format!("damaged: {}", problems.join("; "))));
    }
    Ok(())
}
