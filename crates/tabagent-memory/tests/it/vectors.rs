use tabagent_memory::{
    Change, Embedding, Memory, MemoryConfig, Metric, Mode, SearchRequest, Store,
};

use crate::{spread, with_vector};

fn nearest(memory: &Memory, space: &str, vector: Vec<f32>) -> Vec<i64> {
    let req = SearchRequest {
        text: None,
        vector: Some(Embedding {
            space: space.to_string(),
            vector,
        }),
        filter: Default::default(),
        mode: Mode::Vector,
        limit: 3,
        offset: 0,
    };
    memory
        .search(&req)
        .expect("search")
        .hits
        .into_iter()
        .map(|h| h.record.id)
        .collect()
}

#[test]
fn deleted_and_replaced_vectors_leave_the_index() {
    let dir = tempfile::tempdir().expect("dir");
    let memory = Memory::open(&MemoryConfig::at(dir.path())).expect("open");
    let a = memory
        .insert(Store::Embeddings, with_vector("a", "s", spread(1)))
        .expect("insert");
    let b = memory
        .insert(Store::Embeddings, with_vector("b", "s", spread(2)))
        .expect("insert");
    assert_eq!(nearest(&memory, "s", spread(1))[0], a.id);
    memory.delete(a.id).expect("delete");
    assert!(!nearest(&memory, "s", spread(1)).contains(&a.id));
    let keyed = |v| tabagent_memory::NewRecord {
        key: Some("k".into()),
        ..with_vector("keyed", "s", v)
    };
    let k = memory
        .insert(Store::Meta, keyed(spread(3)))
        .expect("insert");
    memory
        .insert(Store::Meta, keyed(spread(4)))
        .expect("replace");
    assert_eq!(nearest(&memory, "s", spread(4))[0], k.id);
    assert_ne!(nearest(&memory, "s", spread(3))[0], k.id);
    let report = memory.check().expect("check");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.vectors, 2);
    let _ = b;
}

#[test]
fn reopening_replays_the_log_or_rebuilds_a_missing_index() {
    let dir = tempfile::tempdir().expect("dir");
    let config = MemoryConfig {
        save_every: 10,
        ..MemoryConfig::at(dir.path())
    };
    let mut ids = Vec::new();
    {
        let memory = Memory::open(&config).expect("open");
        for i in 0..25 {
            let r = memory
                .insert(Store::Embeddings, with_vector("x", "s", spread(i)))
                .expect("insert");
            ids.push(r.id);
        }
    }
    let memory = Memory::open(&config).expect("reopen");
    assert_eq!(nearest(&memory, "s", spread(24))[0], ids[24]);
    assert!(memory.check().expect("check").ok);
    drop(memory);

    // A damaged saved index is noticed (its checksum) and rebuilt, never searched.
    let saved: Vec<_> = std::fs::read_dir(&config.index_dir)
        .expect("index dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hnsw"))
        .collect();
    assert_eq!(saved.len(), 1, "one saved index for one space: {saved:?}");
    // Opening, searching and closing changes nothing, so the file is not written again.
    let inode = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).expect("index file").ino()
    };
    let before = inode(&saved[0]);
    let memory = Memory::open(&config).expect("reopen");
    assert_eq!(nearest(&memory, "s", spread(3))[0], ids[3]);
    drop(memory);
    assert_eq!(inode(&saved[0]), before, "an unchanged index was rewritten");
    let mut bytes = std::fs::read(&saved[0]).expect("read index");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xff);
    std::fs::write(&saved[0], bytes).expect("damage index");
    let memory = Memory::open(&config).expect("reopen with a damaged index");
    assert_eq!(nearest(&memory, "s", spread(13))[0], ids[13]);
    let report = memory.check().expect("check");
    assert!(report.ok, "{:?}", report.problems);
    drop(memory);

    std::fs::remove_dir_all(&config.index_dir).expect("remove index");
    let memory = Memory::open(&config).expect("reopen without index");
    assert_eq!(nearest(&memory, "s", spread(7))[0], ids[7]);
    let report = memory.check().expect("check");
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.vectors, 25);
}

#[test]
fn a_second_handle_on_the_same_files_sees_the_first_ones_writes() {
    let dir = tempfile::tempdir().expect("dir");
    let config = MemoryConfig::at(dir.path());
    let first = Memory::open(&config).expect("open");
    let second = Memory::open(&config).expect("open again");
    let r = first
        .insert(Store::Embeddings, with_vector("x", "shared", spread(9)))
        .expect("insert");
    assert_eq!(nearest(&second, "shared", spread(9)), vec![r.id]);
    second
        .delete(r.id)
        .expect("delete through the other handle");
    assert!(nearest(&first, "shared", spread(9)).is_empty());
}

#[test]
fn a_euclidean_space_reports_distances() {
    let (_dir, memory) = crate::fresh();
    memory
        .apply(vec![Change::DefineSpace {
            space: "points".into(),
            dimensions: 2,
            metric: Metric::Euclidean,
        }])
        .expect("define");
    let near = memory
        .insert(
            Store::Embeddings,
            with_vector("near", "points", vec![3.0, 4.0]),
        )
        .expect("insert");
    memory
        .insert(
            Store::Embeddings,
            with_vector("far", "points", vec![30.0, 40.0]),
        )
        .expect("insert");
    let req = SearchRequest {
        text: None,
        vector: Some(Embedding {
            space: "points".into(),
            vector: vec![0.0, 0.0],
        }),
        filter: Default::default(),
        mode: Mode::Vector,
        limit: 2,
        offset: 0,
    };
    let hits = memory.search(&req).expect("search").hits;
    assert_eq!(hits[0].record.id, near.id);
    let distance = hits[0].why.vector_score.expect("distance");
    assert!((distance - 5.0).abs() < 1e-3, "{distance}");
    let redefined = memory.apply(vec![Change::DefineSpace {
        space: "points".into(),
        dimensions: 2,
        metric: Metric::Cosine,
    }]);
    assert_eq!(redefined.expect_err("refused").param(), Some("metric"));
}
