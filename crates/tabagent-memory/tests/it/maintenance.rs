use tabagent_memory::{Memory, MemoryConfig, Store};

use crate::{fresh, spread, text, with_vector};

#[test]
fn a_backup_restores_the_memory_as_it_was_and_indexes_follow() {
    let (dir, memory) = fresh();
    let kept = memory
        .insert(
            Store::Embeddings,
            with_vector("before the backup", "s", spread(1)),
        )
        .expect("insert");
    let file = dir.path().join("backup.sqlite");
    assert!(memory.backup(&file).expect("backup") > 0);
    assert_eq!(
        memory.backup(&file).expect_err("no overwrite").param(),
        Some("path")
    );
    let later = memory
        .insert(
            Store::Embeddings,
            with_vector("after the backup", "s", spread(2)),
        )
        .expect("insert");
    memory.delete(kept.id).expect("delete");

    memory.restore(&file).expect("restore");
    assert_eq!(memory.get(kept.id).expect("back").text, "before the backup");
    assert!(memory.get(later.id).is_err(), "the later record is gone");
    let report = memory.check().expect("check");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!((report.records, report.vectors), (1, 1));
}

#[test]
fn restore_refuses_what_is_not_a_sound_backup_and_changes_nothing() {
    let (dir, memory) = fresh();
    let kept = memory
        .insert(Store::Knowledge, text("kept"))
        .expect("insert");
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, b"this is not a database").expect("write");
    let foreign = dir.path().join("foreign.sqlite");
    wrong_version_db(&foreign);
    for bad in [junk, foreign, dir.path().join("missing.sqlite")] {
        let err = memory.restore(&bad).expect_err("refused");
        assert_eq!(err.param(), Some("path"), "{err}");
    }
    assert_eq!(memory.get(kept.id).expect("unchanged").text, "kept");
}

/// An SQLite database of a schema version this tabagent does not know.
fn wrong_version_db(path: &std::path::Path) {
    let other = Memory::open(&MemoryConfig::at(path.with_extension("dir"))).expect("open");
    drop(other);
    // A valid SQLite file with the wrong schema version: copy the header of a fresh memory
    // and damage the user_version field (offset 60, big-endian).
    let source = path.with_extension("dir").join("memory.sqlite");
    let mut bytes = std::fs::read(source).expect("read");
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn check_finds_an_index_that_disagrees_with_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let config = MemoryConfig::at(dir.path());
    let memory = Memory::open(&config).expect("open");
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = memory
            .insert(Store::Embeddings, with_vector("x", "s", spread(i)))
            .expect("insert");
        ids.push(r.id);
    }
    assert!(memory.check().expect("check").ok);
    assert_eq!(memory.stats().expect("stats").spaces[0].indexed, 5);
    // Change a stored vector behind the memory's back (no log entry): the index now holds
    // the old one, and check must say so.
    let raw = rusqlite::Connection::open(&config.path).expect("raw");
    let other: Vec<u8> = spread(99).iter().flat_map(|x| x.to_le_bytes()).collect();
    raw.execute(
        "UPDATE vectors SET vector = ?1 WHERE record_id = ?2",
        rusqlite::params![other, ids[2]],
    )
    .expect("tamper");
    let report = memory.check().expect("check");
    assert!(!report.ok);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains(&format!("record {}", ids[2])));
}
