use std::path::Path;
use std::sync::Arc;

use tabagent_librarian::{
    Chunker, DocumentSource, DocumentStatus, IngestError, IngestOutcome, Library,
};
use tabagent_memory::{
    Filter, LocalMemory, Memory, MemoryApi, MemoryConfig, Mode, Order, SearchRequest, Store,
};

use crate::{corpus, extractor};

pub type Shelf = Library<LocalMemory>;

/// A library over a fresh memory in `dir`, keyword search only (no embedding model: the
/// server's tests cover vectors with the real one).
pub fn shelf(dir: &Path) -> Shelf {
    let memory = Memory::open(&MemoryConfig::at(dir)).unwrap_or_else(|e| panic!("{e}"));
    Library::new(
        LocalMemory(Arc::new(memory)),
        extractor(),
        Chunker::by_characters(),
        None,
        1000,
    )
}

async fn passages_in_memory(shelf: &Shelf) -> Vec<tabagent_memory::Record> {
    shelf
        .memory()
        .list(
            Filter {
                stores: vec![Store::Knowledge],
                kinds: vec!["chunk".into()],
                ..Filter::default()
            },
            Order::Oldest,
            1000,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .records
}

async fn keyword(shelf: &Shelf, words: &str) -> Vec<(String, Vec<tabagent_librarian::Source>)> {
    let found = shelf
        .memory()
        .search(SearchRequest {
            text: Some(words.into()),
            vector: None,
            filter: Filter {
                stores: vec![Store::Knowledge],
                ..Filter::default()
            },
            mode: Mode::Keyword,
            limit: 5,
            offset: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let records: Vec<&tabagent_memory::Record> = found.hits.iter().map(|h| &h.record).collect();
    let sources = tabagent_librarian::sources(shelf.memory(), &records)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    found
        .hits
        .iter()
        .map(|h| h.record.text.clone())
        .zip(sources)
        .collect()
}

fn ok<T>(result: Result<T, IngestError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_pdf_is_found_by_its_words_with_its_page() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shelf = shelf(dir.path());
    let bytes = std::fs::read(corpus("orchard-handbook.pdf")).unwrap_or_else(|e| panic!("{e}"));
    let (doc, outcome) = ok(shelf
        .ingest(
            DocumentSource::Upload {
                name: "orchard-handbook.pdf".into(),
            },
            bytes.clone(),
            None,
        )
        .await);
    assert_eq!(outcome, IngestOutcome::Added);
    assert_eq!((doc.pages, doc.status), (Some(3), DocumentStatus::Ready));
    assert!(doc.chunks >= 3, "{doc:?}");
    let hits = keyword(&shelf, "quince golden yellow").await;
    let (text, sources) = &hits[0];
    assert!(text.contains("Quinces ripen"), "{text}");
    assert_eq!(sources.len(), 1);
    assert_eq!(
        (sources[0].page, sources[0].document.as_str()),
        (Some(3), doc.id.as_str())
    );
    assert_eq!(sources[0].label(), "Orchard Handbook, p. 3");
    // The same bytes again: the same document, nothing written.
    let before = passages_in_memory(&shelf).await;
    let (again, outcome) = ok(shelf
        .ingest(
            DocumentSource::Upload {
                name: "copy.pdf".into(),
            },
            bytes,
            None,
        )
        .await);
    assert_eq!(
        (outcome, again.id),
        (IngestOutcome::Unchanged, doc.id.clone())
    );
    assert_eq!(passages_in_memory(&shelf).await, before);
    // Its passages in reading order, each citing its own text.
    let passages = ok(shelf.passages(&doc.id).await);
    assert_eq!(passages.len(), doc.chunks);
    assert!(passages.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[tokio::test]
async fn an_edited_file_replaces_its_passages_and_a_removed_one_leaves_none() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shelf = shelf(&dir.path().join("memory"));
    let file = dir.path().join("notes.md");
    let keep = "# Keys\n\nThe spare key hangs on the hook inside the garden shed door.";
    std::fs::write(
        &file,
        format!("{keep}\n\n# Wifi\n\nThe guest network password is lantern-42.\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (doc, outcome) = ok(shelf.ingest_file(&file).await);
    assert_eq!(outcome, IngestOutcome::Added);
    assert_eq!(keyword(&shelf, "lantern").await.len(), 1);
    // Unchanged: not read again.
    assert_eq!(
        ok(shelf.ingest_file(&file).await).1,
        IngestOutcome::Unchanged
    );
    std::fs::write(
        &file,
        format!("{keep}\n\n# Wifi\n\nThe guest network password is harbour-77.\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (edited, outcome) = ok(shelf.ingest_file(&file).await);
    assert_eq!(
        (outcome, edited.id.as_str()),
        (IngestOutcome::Replaced, doc.id.as_str())
    );
    assert!(
        keyword(&shelf, "lantern").await.is_empty(),
        "the old passage is gone"
    );
    assert_eq!(keyword(&shelf, "harbour").await.len(), 1);
    assert_eq!(
        keyword(&shelf, "spare key shed").await.len(),
        1,
        "no duplicate after the edit"
    );
    ok(shelf.remove(&doc.id).await);
    assert!(passages_in_memory(&shelf).await.is_empty());
    assert!(ok(shelf.list().await).is_empty());
    assert!(matches!(
        shelf.remove(&doc.id).await,
        Err(IngestError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_passage_two_documents_share_is_stored_once_and_kept_while_one_cites_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shelf = shelf(dir.path());
    let shared = "All visitors must sign in at the front desk and wear their badge at all times.";
    let first = ok(shelf
        .ingest(
            DocumentSource::Upload {
                name: "a.txt".into(),
            },
            shared.as_bytes().to_vec(),
            None,
        )
        .await)
    .0;
    let second = ok(shelf
        .ingest(
            DocumentSource::Upload {
                name: "b.md".into(),
            },
            format!("# Office rules\n\n{shared}").into_bytes(),
            None,
        )
        .await)
    .0;
    let third = ok(shelf
        .ingest(
            DocumentSource::Upload {
                name: "c.txt".into(),
            },
            format!("{shared}\n").into_bytes(),
            None,
        )
        .await)
    .0;
    assert_ne!(first.id, third.id, "different bytes, different documents");
    let hits = keyword(&shelf, "visitors badge").await;
    let exact: Vec<_> = hits.iter().filter(|(text, _)| text == shared).collect();
    assert_eq!(exact.len(), 1, "stored once: {hits:?}");
    let cited: Vec<&str> = exact[0].1.iter().map(|s| s.document.as_str()).collect();
    assert!(
        cited.contains(&first.id.as_str()) && cited.contains(&third.id.as_str()),
        "{cited:?}"
    );
    ok(shelf.remove(&first.id).await);
    let hits = keyword(&shelf, "visitors badge").await;
    let exact: Vec<_> = hits.iter().filter(|(text, _)| text == shared).collect();
    assert_eq!(exact.len(), 1, "kept for the document still citing it");
    assert_eq!(exact[0].1.len(), 1);
    assert_eq!(exact[0].1[0].document, third.id);
    ok(shelf.remove(&third.id).await);
    ok(shelf.remove(&second.id).await);
    assert!(passages_in_memory(&shelf).await.is_empty());
}

#[tokio::test]
async fn a_moved_file_keeps_its_document_and_a_broken_one_is_kept_as_failed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shelf = shelf(&dir.path().join("memory"));
    let old = dir.path().join("handbook.pdf");
    std::fs::copy(corpus("orchard-handbook.pdf"), &old).unwrap_or_else(|e| panic!("{e}"));
    let doc = ok(shelf.ingest_file(&old).await).0;
    let before = passages_in_memory(&shelf).await;
    let new = dir.path().join("orchard.pdf");
    std::fs::rename(&old, &new).unwrap_or_else(|e| panic!("{e}"));
    let (moved, outcome) = ok(shelf.ingest_file(&new).await);
    assert_eq!(
        (outcome, moved.id.as_str()),
        (IngestOutcome::Moved, doc.id.as_str())
    );
    assert_eq!(
        moved.path.as_deref(),
        Some(new.to_str().unwrap_or_default())
    );
    assert_eq!(
        passages_in_memory(&shelf).await,
        before,
        "passages untouched"
    );
    assert!(ok(shelf.by_path(&old).await).is_none());

    let broken = dir.path().join("broken.pdf");
    std::fs::copy(corpus("truncated.pdf"), &broken).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        shelf.ingest_file(&broken).await,
        Err(IngestError::Extract(_))
    ));
    let failed = ok(shelf.by_path(&broken).await).unwrap_or_else(|| panic!("kept as failed"));
    assert_eq!(failed.status, DocumentStatus::Failed);
    assert!(
        failed.error.as_deref().unwrap_or_default().contains("PDF"),
        "{failed:?}"
    );
    // Fixed, it is read.
    std::fs::write(
        &broken,
        std::fs::read(corpus("orchard-handbook.pdf")).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (fixed, outcome) = ok(shelf.ingest_file(&broken).await);
    assert_eq!(
        (outcome, fixed.status),
        (IngestOutcome::Replaced, DocumentStatus::Ready)
    );
    assert_eq!(fixed.id, failed.id);
}

#[tokio::test]
async fn an_unreadable_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let shelf = shelf(dir.path());
    for name in ["encrypted.pdf", "scanned-letter.pdf"] {
        let bytes = std::fs::read(corpus(name)).unwrap_or_else(|e| panic!("{e}"));
        let result = shelf
            .ingest(DocumentSource::Upload { name: name.into() }, bytes, None)
            .await;
        assert!(
            matches!(result, Err(IngestError::Extract(_))),
            "{name}: {result:?}"
        );
    }
    let result = shelf
        .ingest(
            DocumentSource::Upload {
                name: "song.mp3".into(),
            },
            b"ID3\x04".to_vec(),
            None,
        )
        .await;
    assert!(matches!(
        result,
        Err(IngestError::Extract(
            tabagent_librarian::ExtractError::Unsupported
        ))
    ));
    assert!(ok(shelf.list().await).is_empty());
}
