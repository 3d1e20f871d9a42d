use tabagent_memory::{Embedding, Filter, Mode, NewRecord, SearchRequest, Store};

use crate::{fresh, spread, text, with_vector};

fn request(text: Option<&str>, vector: Option<Vec<f32>>, mode: Mode) -> SearchRequest {
    SearchRequest {
        text: text.map(str::to_string),
        vector: vector.map(|vector| Embedding {
            space: "s".to_string(),
            vector,
        }),
        filter: Filter::default(),
        mode,
        limit: 5,
        offset: 0,
    }
}

#[test]
fn keyword_search_ranks_by_bm25_with_stemming_and_treats_syntax_as_words() {
    let (_dir, memory) = fresh();
    let cat = memory
        .insert(
            Store::Knowledge,
            text("The cats are sleeping on the warm sofa"),
        )
        .expect("insert");
    memory
        .insert(Store::Knowledge, text("Dogs bark at the mail carrier"))
        .expect("insert");
    let found = memory
        .search(&SearchRequest::keyword("cat sleep"))
        .expect("search");
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].record.id, cat.id);
    assert!(found.hits[0].why.keyword_score.is_some_and(|s| s > 0.0));
    assert_eq!(found.hits[0].why.vector_rank, None);
    // FTS5 syntax in the query is read as plain words, never as an error.
    let odd = memory
        .search(&SearchRequest::keyword(r#"cats" NEAR( OR * -"#))
        .expect("search");
    assert_eq!(odd.hits.first().map(|h| h.record.id), Some(cat.id));
}

#[test]
fn vector_search_finds_the_nearest_and_hybrid_fuses_both_lists() {
    let (_dir, memory) = fresh();
    let mut ids = Vec::new();
    for i in 0..200 {
        let r = memory
            .insert(
                Store::Embeddings,
                with_vector(&format!("chunk number {i}"), "s", spread(i)),
            )
            .expect("insert");
        ids.push(r.id);
    }
    let found = memory
        .search(&request(None, Some(spread(17)), Mode::Vector))
        .expect("search");
    assert_eq!(found.vector_method, Some("hnsw"));
    assert_eq!(found.hits[0].record.id, ids[17]);
    let top = found.hits[0].why.vector_score.expect("score");
    assert!(
        (top - 1.0).abs() < 1e-4,
        "cosine of a vector with itself: {top}"
    );

    // The keyword list alone prefers chunk 42; the vector list prefers chunk 17; the record in
    // both lists wins the fusion.
    let both = memory
        .search(&request(
            Some("number 17 42"),
            Some(spread(17)),
            Mode::Hybrid,
        ))
        .expect("search");
    let first = &both.hits[0];
    assert_eq!(first.record.id, ids[17]);
    assert_eq!(first.why.vector_rank, Some(1));
    assert!(first.why.keyword_rank.is_some());
    assert!(both
        .hits
        .windows(2)
        .all(|w| w[0].why.fused_score >= w[1].why.fused_score));
}

#[test]
fn filters_apply_to_vector_search_exactly_when_few_records_pass() {
    let (_dir, memory) = fresh();
    for i in 0..300 {
        let store = if i % 10 == 0 {
            Store::Experience
        } else {
            Store::Embeddings
        };
        memory
            .insert(store, with_vector(&format!("item {i}"), "s", spread(i)))
            .expect("insert");
    }
    let mut req = request(None, Some(spread(5)), Mode::Vector);
    req.filter.stores = vec![Store::Experience];
    req.limit = 100;
    let found = memory.search(&req).expect("search");
    assert_eq!(found.vector_method, Some("exact"));
    assert_eq!(found.hits.len(), 30);
    assert!(found
        .hits
        .iter()
        .all(|h| h.record.store == Store::Experience));
    let scores: Vec<f32> = found
        .hits
        .iter()
        .filter_map(|h| h.why.vector_score)
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
}

#[test]
fn pages_of_a_search_do_not_overlap() {
    let (_dir, memory) = fresh();
    for i in 0..30 {
        memory
            .insert(
                Store::Knowledge,
                text(&format!("apple pie recipe variant {i}")),
            )
            .expect("insert");
    }
    let mut req = SearchRequest::keyword("apple pie");
    req.limit = 10;
    let mut seen = std::collections::HashSet::new();
    for page in 0..3 {
        req.offset = page * 10;
        let hits = memory.search(&req).expect("search").hits;
        assert_eq!(hits.len(), 10);
        for hit in hits {
            assert!(seen.insert(hit.record.id), "repeated {}", hit.record.id);
        }
    }
}

#[test]
fn searches_that_cannot_run_say_why() {
    let (_dir, memory) = fresh();
    memory
        .insert(
            Store::Embeddings,
            with_vector("a", "s", vec![1.0, 0.0, 0.0]),
        )
        .expect("insert");
    let cases = [
        (request(None, None, Mode::Hybrid), "query"),
        (request(Some("  "), None, Mode::Keyword), "query"),
        (request(Some("a"), None, Mode::Vector), "vector"),
        (request(None, Some(vec![1.0, 0.0]), Mode::Vector), "vector"),
    ];
    for (req, param) in cases {
        let err = memory.search(&req).expect_err("refused");
        assert!(err.is_callers_fault(), "{err}");
        assert_eq!(err.param(), Some(param), "{err}");
    }
    let mut zero = SearchRequest::keyword("a");
    zero.limit = 0;
    assert_eq!(
        memory.search(&zero).expect_err("refused").param(),
        Some("limit")
    );
    // A vector of the wrong width is refused at write time too.
    let err = memory
        .insert(Store::Embeddings, with_vector("b", "s", vec![1.0, 0.0]))
        .expect_err("refused");
    assert!(err.to_string().contains("3-dimensional"), "{err}");
    let unknown_space = request(None, Some(vec![1.0]), Mode::Vector);
    let mut unknown_space = unknown_space;
    unknown_space.vector = Some(Embedding {
        space: "never-used".into(),
        vector: vec![1.0],
    });
    assert!(memory
        .search(&unknown_space)
        .expect("search")
        .hits
        .is_empty());
    let _ = NewRecord::default();
}
