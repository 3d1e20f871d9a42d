use tabagent_memory::{Change, Filter, MemoryError, NewRecord, Order, Outcome, Store};

use crate::{fresh, text};

#[test]
fn every_store_keeps_its_records_with_their_fields() {
    let (_dir, memory) = fresh();
    for store in Store::ALL {
        let record = memory
            .insert(
                store,
                NewRecord {
                    text: format!("a record in {store}"),
                    tags: vec!["t1".into(), "t2".into()],
                    conversation: Some("c1".into()),
                    source: Some("test".into()),
                    role: Some("user".into()),
                    data: serde_json::json!({"n": 1}),
                    ..Default::default()
                },
            )
            .expect("insert");
        let read = memory.get(record.id).expect("get");
        assert_eq!(read, record);
        assert_eq!(read.store, store);
        assert_eq!(read.data, serde_json::json!({"n": 1}));
        assert_eq!(read.tags, vec!["t1", "t2"]);
    }
    let stats = memory.stats().expect("stats");
    assert_eq!(stats.stores.len(), 7);
    assert!(stats
        .stores
        .iter()
        .all(|s| s.records == 1 && s.with_vectors == 0));
}

#[test]
fn a_key_names_one_record_per_store_and_writing_it_again_replaces_it() {
    let (_dir, memory) = fresh();
    let keyed = |t: &str| NewRecord {
        key: Some("theme".into()),
        ..text(t)
    };
    let first = memory.insert(Store::Meta, keyed("dark")).expect("insert");
    let second = memory.insert(Store::Meta, keyed("light")).expect("replace");
    assert_eq!(first.id, second.id);
    assert_eq!(memory.get(first.id).expect("get").text, "light");
    let other_store = memory.insert(Store::Knowledge, keyed("x")).expect("insert");
    assert_ne!(other_store.id, first.id);
    let found = memory.get_by_key(Store::Meta, "theme").expect("by key");
    assert_eq!(found.map(|r| r.text), Some("light".to_string()));
}

#[test]
fn a_group_of_changes_is_all_or_nothing() {
    let (_dir, memory) = fresh();
    let kept = memory
        .insert(Store::Knowledge, text("kept"))
        .expect("insert");
    let failed = memory.apply(vec![
        Change::Insert {
            store: Store::Conversations,
            record: text("never stored"),
        },
        Change::Delete { id: kept.id },
        Change::Delete { id: 999_999 },
    ]);
    assert!(matches!(failed, Err(MemoryError::NotFound(999_999))));
    assert_eq!(memory.get(kept.id).expect("still there").text, "kept");
    let all = memory
        .list(&Filter::default(), Order::Newest, 100, None)
        .expect("list");
    assert_eq!(
        all.records.len(),
        1,
        "the insert in the failed group was undone"
    );

    let done = memory
        .apply(vec![
            Change::Insert {
                store: Store::Experience,
                record: text("episode"),
            },
            Change::Insert {
                store: Store::Summaries,
                record: text("summary"),
            },
            Change::Delete { id: kept.id },
        ])
        .expect("apply");
    assert!(matches!(done[2], Outcome::Deleted { id } if id == kept.id));
    let stores: Vec<Store> = memory
        .list(&Filter::default(), Order::Oldest, 100, None)
        .expect("list")
        .records
        .into_iter()
        .map(|r| r.store)
        .collect();
    assert_eq!(stores, vec![Store::Experience, Store::Summaries]);
}

#[test]
fn concurrent_writers_each_get_their_own_acknowledged_record() {
    let (_dir, memory) = fresh();
    let memory = std::sync::Arc::new(memory);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let memory = std::sync::Arc::clone(&memory);
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let r = memory
                            .insert(Store::ToolResults, text(&format!("thread {t} item {i}")))
                            .expect("insert");
                        (r.id, r.text)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written = Vec::new();
    for t in threads {
        written.extend(t.join().expect("thread"));
    }
    assert_eq!(written.len(), 400);
    for (id, text) in written {
        assert_eq!(memory.get(id).expect("get").text, text);
    }
}

#[test]
fn listing_filters_and_pages_without_gaps_or_repeats() {
    let (_dir, memory) = fresh();
    for i in 0..25 {
        let record = tabagent_memory::NewRecord {
            conversation: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
            tags: if i % 5 == 0 {
                vec!["fifth".into()]
            } else {
                vec![]
            },
            created_at: Some(1_000 + i),
            ..text(&format!("message {i}"))
        };
        memory.insert(Store::Conversations, record).expect("insert");
    }
    let filter = Filter {
        conversation: Some("even".into()),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = memory.list(&filter, Order::Oldest, 4, after).expect("page");
        seen.extend(page.records.iter().map(|r| r.text.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).step_by(2).map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);

    let tagged = Filter {
        tags: vec!["fifth".into()],
        since: Some(1_005),
        until: Some(1_020),
        ..Default::default()
    };
    let page = memory.list(&tagged, Order::Newest, 10, None).expect("list");
    let texts: Vec<&str> = page.records.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, vec!["message 15", "message 10", "message 5"]);
}

#[test]
fn bad_input_is_refused_with_the_field_named() {
    let (_dir, memory) = fresh();
    let huge = "x".repeat((1 << 20) + 1);
    let cases: Vec<(NewRecord, &str)> = vec![
        (text(&huge), "text"),
        (
            NewRecord {
                data: serde_json::json!([1, 2]),
                ..text("a")
            },
            "data",
        ),
        (
            NewRecord {
                tags: vec![String::new()],
                ..text("a")
            },
            "tags",
        ),
        (
            NewRecord {
                tags: (0..65).map(|i| i.to_string()).collect(),
                ..text("a")
            },
            "tags",
        ),
        (crate::with_vector("a", "s", vec![]), "vector"),
        (crate::with_vector("a", "s", vec![f32::NAN]), "vector"),
        (crate::with_vector("a", "", vec![1.0]), "space"),
    ];
    for (record, param) in cases {
        let err = memory
            .insert(Store::Knowledge, record)
            .expect_err("refused");
        assert!(err.is_callers_fault(), "{err}");
        assert_eq!(err.param(), Some(param), "{err}");
    }
    assert!(matches!(
        Store::parse("nope"),
        Err(MemoryError::UnknownStore(_))
    ));
    let bad_range = Filter {
        since: Some(10),
        until: Some(5),
        ..Default::default()
    };
    let err = memory
        .list(&bad_range, Order::Newest, 10, None)
        .expect_err("refused");
    assert_eq!(err.param(), Some("since"));
    assert_eq!(
        memory
            .list(&Filter::default(), Order::Newest, 0, None)
            .expect_err("refused")
            .param(),
        Some("limit")
    );
    assert!(matches!(memory.get(42), Err(MemoryError::NotFound(42))));
    assert!(matches!(memory.delete(42), Err(MemoryError::NotFound(42))));
    let stats = memory.stats().expect("stats");
    assert!(
        stats.stores.iter().all(|s| s.records == 0),
        "nothing was stored"
    );
}
