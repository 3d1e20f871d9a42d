//! The full-text index is written once per commit by the writer, and by triggers only for
//! records it already holds: it must end every commit holding exactly the records' text.

use tabagent_memory::{Change, Memory, MemoryConfig, NewRecord, SearchRequest, Store};

use crate::{fresh, text};

fn keyed(key: &str, t: &str) -> NewRecord {
    NewRecord {
        key: Some(key.to_string()),
        ..text(t)
    }
}

fn insert(record: NewRecord) -> Change {
    Change::Insert {
        store: Store::Knowledge,
        record,
    }
}

/// Ids of the records a keyword search finds.
fn found(memory: &Memory, words: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = memory
        .search(&SearchRequest::keyword(words))
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.record.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn assert_sound(memory: &Memory) {
    let report = memory.check().expect("check");
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn the_text_index_follows_replacements_and_deletes_within_and_across_commits() {
    let (_dir, memory) = fresh();
    // Written and replaced inside one commit: only the last text is indexed.
    let outcomes = memory
        .apply(vec![
            insert(keyed("animal", "zebra crossing")),
            insert(keyed("animal", "giraffe neck")),
            insert(text("hippo river")),
        ])
        .expect("apply");
    let ids: Vec<i64> = outcomes
        .iter()
        .map(|o| match o {
            tabagent_memory::Outcome::Inserted { record } => record.id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let (animal, hippo) = (ids[0], ids[2]);
    assert_eq!(ids[1], animal, "the key names one record");
    assert!(found(&memory, "zebra").is_empty());
    assert_eq!(found(&memory, "giraffe"), vec![animal]);
    assert_eq!(found(&memory, "hippo"), vec![hippo]);
    assert_sound(&memory);

    // Replaced and deleted in later commits, after their text was indexed.
    memory
        .insert(Store::Knowledge, keyed("animal", "okapi forest"))
        .expect("replace");
    memory.delete(hippo).expect("delete");
    assert!(found(&memory, "giraffe").is_empty());
    assert_eq!(found(&memory, "okapi"), vec![animal]);
    assert!(found(&memory, "hippo").is_empty());
    assert_sound(&memory);

    // A group that fails leaves nothing in the index, and the next commit indexes normally.
    let failed = memory.apply(vec![
        insert(text("narwhal tusk")),
        Change::Delete { id: 999_999 },
    ]);
    assert!(failed.is_err());
    let walrus = memory
        .insert(Store::Knowledge, text("walrus tusk"))
        .expect("insert");
    assert_eq!(found(&memory, "tusk"), vec![walrus.id]);
    assert_sound(&memory);
}

/// Turns the memory at `config` back into a version 2 database, whose triggers indexed every
/// insert row by row.
fn make_version_2(config: &MemoryConfig) {
    let conn = rusqlite::Connection::open(&config.path).expect("raw");
    conn.execute_batch(
        "DROP TABLE fts_indexed;
         DROP TRIGGER records_fts_delete;
         DROP TRIGGER records_fts_update;
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
         INSERT INTO records(store, kind, text, key, created_at)
             VALUES ('knowledge', 'fact', 'written by version two', 'v2', 0);
         PRAGMA user_version = 2;",
    )
    .expect("downgrade");
}

#[test]
fn a_version_2_database_and_its_backups_keep_their_text_index_after_upgrade() {
    let dir = tempfile::tempdir().expect("dir");
    let config = MemoryConfig::at(dir.path().join("old"));
    let before = {
        let memory = Memory::open(&config).expect("open");
        memory
            .insert(Store::Knowledge, text("an old note about lighthouses"))
            .expect("insert")
    };
    make_version_2(&config);
    let backup = dir.path().join("v2-backup.sqlite");
    std::fs::copy(&config.path, &backup).expect("copy");

    let memory = Memory::open(&config).expect("upgrade");
    assert_sound(&memory);
    let from_v2 = found(&memory, "version two");
    assert_eq!(from_v2.len(), 1);
    // Records indexed by the old triggers are replaced and deleted cleanly.
    memory
        .insert(Store::Knowledge, keyed("v2", "rewritten after the upgrade"))
        .expect("replace");
    memory.delete(before.id).expect("delete");
    assert!(found(&memory, "lighthouses").is_empty());
    assert!(found(&memory, "version two").is_empty());
    assert_eq!(found(&memory, "rewritten upgrade"), from_v2);
    let new = memory
        .insert(Store::Knowledge, text("a new note about lighthouses"))
        .expect("insert");
    assert_eq!(found(&memory, "lighthouses"), vec![new.id]);
    assert_sound(&memory);

    // A backup from version 2 is accepted, and upgraded as it is restored.
    let (_other_dir, other) = fresh();
    other.restore(&backup).expect("restore");
    assert_eq!(found(&other, "lighthouses"), vec![before.id]);
    assert_sound(&other);
}
