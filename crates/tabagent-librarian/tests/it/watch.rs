use std::sync::Arc;
use std::time::Duration;

use tabagent_librarian::{IngestOutcome, Noticed};
use tokio::sync::mpsc;

use crate::corpus;
use crate::library::shelf;

/// The next thing the librarian noticed; a minute without one fails the test (a guard, not a
/// wait: events arrive in well under a second).
/// Files found unchanged are skipped: one change may raise several events (a new folder is
/// scanned, then the file moved into it is seen again).
async fn next(noticed: &mut mpsc::UnboundedReceiver<Noticed>) -> Noticed {
    loop {
        let got = tokio::time::timeout(Duration::from_secs(60), noticed.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing noticed"))
            .unwrap_or_else(|| panic!("the watch stopped"));
        if !matches!(
            got,
            Noticed::Ingested {
                outcome: IngestOutcome::Unchanged,
                ..
            }
        ) {
            return got;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_folder_is_scanned_then_followed_through_adds_moves_and_deletes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = dir.path().join("inbox").canonicalize_or_create();
    std::fs::write(
        folder.join("before.md"),
        "# Before\n\nWritten while the librarian was stopped.",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(folder.join(".hidden.md"), "not read").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(folder.join("photo.jpg"), b"\xFF\xD8").unwrap_or_else(|e| panic!("{e}"));
    let shelf = Arc::new(shelf(&dir.path().join("memory")));
    let (tell, mut noticed) = mpsc::unbounded_channel();
    let _following = tabagent_librarian::follow(
        Arc::clone(&shelf),
        vec![folder.clone()],
        Box::new(move |n| {
            let _ = tell.send(n);
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The scan: only the document.
    match next(&mut noticed).await {
        Noticed::Ingested { path, outcome, .. } => {
            assert_eq!(
                (path, outcome),
                (folder.join("before.md"), IngestOutcome::Added)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(next(&mut noticed).await, Noticed::Scanned),
        "the scan's end is told"
    );
    // A PDF dropped in.
    std::fs::copy(corpus("orchard-handbook.pdf"), folder.join("handbook.pdf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let id = match next(&mut noticed).await {
        Noticed::Ingested {
            path,
            document,
            outcome,
        } => {
            assert_eq!(
                (path, outcome),
                (folder.join("handbook.pdf"), IngestOutcome::Added)
            );
            assert_eq!(document.pages, Some(3));
            document.id
        }
        other => panic!("{other:?}"),
    };
    // Moved into a subfolder: the same document.
    std::fs::create_dir(folder.join("archive")).unwrap_or_else(|e| panic!("{e}"));
    let moved_to = folder.join("archive").join("orchard.pdf");
    std::fs::rename(folder.join("handbook.pdf"), &moved_to).unwrap_or_else(|e| panic!("{e}"));
    match next(&mut noticed).await {
        Noticed::Ingested {
            path,
            document,
            outcome,
        } => {
            assert_eq!((path, outcome), (moved_to.clone(), IngestOutcome::Moved));
            assert_eq!(document.id, id);
        }
        other => panic!("{other:?}"),
    }
    // Deleted: its document goes.
    std::fs::remove_file(&moved_to).unwrap_or_else(|e| panic!("{e}"));
    match next(&mut noticed).await {
        Noticed::Removed { path, document } => {
            assert_eq!((path, document.id), (moved_to, id));
        }
        other => panic!("{other:?}"),
    }
    let left: Vec<String> = shelf
        .list()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(left, vec!["before.md".to_string()]);
}

trait CreateDir {
    fn canonicalize_or_create(self) -> std::path::PathBuf;
}

impl CreateDir for std::path::PathBuf {
    fn canonicalize_or_create(self) -> std::path::PathBuf {
        std::fs::create_dir_all(&self).unwrap_or_else(|e| panic!("{e}"));
        self.canonicalize().unwrap_or_else(|e| panic!("{e}"))
    }
}
