use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tabagent_hub::{HubError, ProgressEvent, RepoId, RepoPath, Revision};

use crate::support::*;

fn ids(repo: &str, file: &str) -> (RepoId, RepoPath) {
    (RepoId::parse(repo).unwrap(), RepoPath::parse(file).unwrap())
}

#[tokio::test]
async fn a_download_lands_in_the_hugging_face_cache_layout() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(&hub);
    config.token = Some(TOKEN.to_string());
    let client = client(config, cache.path());
    let (repo, file) = ids(REPO, FILE);
    let sha = sha256_of(&model_file());

    let got = client
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();

    let repo_dir = cache
        .path()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    assert_eq!(
        got.path,
        repo_dir.join("snapshots").join(&got.commit).join(FILE)
    );
    assert_eq!(
        std::fs::read_link(&got.path).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(sha256_of(&got.path), sha);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        got.commit
    );
    assert!(got.verified);
    assert_eq!(got.fetched, got.size);
    assert_eq!(
        tree(&repo_dir),
        vec![
            format!("blobs/{sha}"),
            "refs/main".to_string(),
            format!("snapshots/{}/{FILE}", got.commit)
        ],
        "nothing but the layout is left behind"
    );
    // The CDN is another origin: the token never went there.
    assert_eq!(
        hub.stats().cdn_requests_with_auth.load(Ordering::Relaxed),
        0
    );
    assert!(
        hub.stats().cdn_requests.load(Ordering::Relaxed) >= 4,
        "several ranges"
    );
}

#[tokio::test]
async fn a_cached_file_is_not_fetched_again() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(config(&hub), cache.path());
    let (repo, file) = ids(REPO, FILE);
    client
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();
    let served = hub.stats().cdn_bytes.load(Ordering::Relaxed);

    let events = Recorder::default();
    let again = client
        .download(&repo, &Revision::main(), &file, &events.sink())
        .await
        .unwrap();

    assert_eq!(again.fetched, 0);
    assert_eq!(hub.stats().cdn_bytes.load(Ordering::Relaxed), served);
    assert!(
        matches!(events.events().as_slice(), [ProgressEvent::Cached { .. }]),
        "{:?}",
        events.events()
    );
}

#[tokio::test]
async fn a_dropped_connection_resumes_where_it_stopped() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(&hub);
    config.connections = 1;
    config.chunk_size = 64 << 20;
    let client = client(config, cache.path());
    let (repo, file) = ids(REPO, FILE);
    {
        let mut faults = hub.faults();
        faults.drop_after = 20 << 20;
        faults.drops = 3;
    }

    let got = client
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();

    assert_eq!(sha256_of(&got.path), sha256_of(&model_file()));
    // Restarting a range after each drop would resend 20 MiB three times.
    let served = hub.stats().cdn_bytes.load(Ordering::Relaxed);
    assert!(
        served < got.size + (20 << 20),
        "served {served} bytes for a {}-byte file",
        got.size
    );
    assert_eq!(hub.faults().drops, 0, "all three drops happened");
}

#[tokio::test]
async fn an_interrupted_download_resumes_in_a_later_attempt() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(config(&hub), cache.path());
    let (repo, file) = ids(REPO, FILE);
    let size = std::fs::metadata(model_file()).unwrap().len();

    // First attempt: abandoned (as a killed process would) once half the bytes are in.
    let (half_tx, half_rx) = tokio::sync::oneshot::channel::<()>();
    let half_tx = std::sync::Mutex::new(Some(half_tx));
    let received = std::sync::atomic::AtomicU64::new(0);
    let progress = |event: ProgressEvent| {
        if let ProgressEvent::Advanced { bytes } = event {
            if received.fetch_add(bytes, Ordering::Relaxed) + bytes >= size / 2 {
                if let Some(tx) = half_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        }
    };
    let main = Revision::main();
    tokio::select! {
        result = client.download(&repo, &main, &file, &progress) => {
            panic!("the download finished before it was abandoned: {result:?}")
        }
        _ = half_rx => {}
    }
    let blobs = cache
        .path()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF/blobs");
    assert!(
        tree(&blobs)
            .iter()
            .any(|f| f.ends_with(".tabagent-partial")),
        "{:?}",
        tree(&blobs)
    );

    let events = Recorder::default();
    let got = client
        .download(&repo, &Revision::main(), &file, &events.sink())
        .await
        .unwrap();

    let resumed = events.resumed().unwrap();
    assert!(resumed >= 8 << 20, "kept {resumed} bytes");
    assert_eq!(
        got.fetched + resumed,
        size,
        "only the missing chunks were fetched"
    );
    assert_eq!(sha256_of(&got.path), sha256_of(&model_file()));
    assert_eq!(tree(&blobs).len(), 1, "{:?}", tree(&blobs));
}

#[tokio::test]
async fn wrong_bytes_are_rejected_and_nothing_is_kept() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(config(&hub), cache.path());
    let (repo, file) = ids(REPO, FILE);
    hub.faults().corrupt = 1;

    let err = client
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap_err();

    assert!(matches!(err, HubError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("discarded"), "{err}");
    let repo_dir = cache
        .path()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    assert!(
        tree(&repo_dir).is_empty(),
        "left behind: {:?}",
        tree(&repo_dir)
    );
}

#[tokio::test]
async fn a_gated_repository_needs_the_token() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let (repo, file) = ids(GATED, FILE);

    let err = client(config(&hub), cache.path())
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap_err();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("HF_TOKEN") && err.to_string().contains("gated"),
        "{err}"
    );

    let mut config = config(&hub);
    config.token = Some(TOKEN.to_string());
    let got = client(config, cache.path())
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();
    assert_eq!(sha256_of(&got.path), sha256_of(&model_file()));
    assert!(hub.stats().authorized.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        hub.stats().cdn_requests_with_auth.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn missing_repositories_files_and_revisions_are_named() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(config(&hub), cache.path());
    let main = Revision::main();

    let (repo, file) = ids("nobody/nothing", FILE);
    let err = client.download(&repo, &main, &file, &()).await.unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");

    let (repo, file) = ids(REPO, "missing.gguf");
    let err = client.download(&repo, &main, &file, &()).await.unwrap_err();
    assert!(matches!(err, HubError::FileNotFound { .. }), "{err}");

    let (repo, file) = ids(REPO, FILE);
    let err = client
        .download(&repo, &Revision::parse("v9").unwrap(), &file, &())
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
    assert!(tree(cache.path()).iter().all(|f| !f.contains("snapshots")));
}

#[tokio::test]
async fn a_stalled_server_is_retried_and_a_slow_one_is_waited_for() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = config(&hub);
    config.timeout = Duration::from_secs(1);
    let client = client(config, cache.path());
    let (repo, file) = ids(REPO, FILE);
    {
        let mut faults = hub.faults();
        faults.drop_after = 1 << 20;
        faults.stalls = 2;
        faults.delay_per_piece = Some(Duration::from_millis(1));
    }
    let events = Recorder::default();

    let got = client
        .download(&repo, &Revision::main(), &file, &events.sink())
        .await
        .unwrap();

    assert_eq!(sha256_of(&got.path), sha256_of(&model_file()));
    let retries = events
        .events()
        .iter()
        .filter(|e| matches!(e, ProgressEvent::Retrying { .. }))
        .count();
    assert_eq!(retries, 2, "{:?}", events.events());
}

#[tokio::test]
async fn offline_mode_serves_the_cache_and_names_what_is_missing() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let (repo, file) = ids(REPO, FILE);
    let online = client(config(&hub), cache.path())
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();
    let heads = hub.stats().heads.load(Ordering::Relaxed);

    let mut config = config(&hub);
    config.offline = true;
    let offline = client(config, cache.path());
    let got = offline
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();
    assert_eq!(got.path, online.path);
    assert_eq!(got.commit, online.commit);
    assert_eq!(
        hub.stats().heads.load(Ordering::Relaxed),
        heads,
        "no request went out"
    );

    let (repo, file) = ids(REPO, "README.md");
    let err = offline
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
}

#[tokio::test]
async fn small_files_come_straight_from_the_endpoint() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let (repo, file) = ids(REPO, "README.md");
    let got = client(config(&hub), cache.path())
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&got.path).unwrap(),
        "# SmolLM2 GGUF\n"
    );
    assert!(!got.verified, "a git etag is not a sha256");
    assert_eq!(hub.stats().cdn_requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_repository_listing_names_its_files() {
    let hub = hub().await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(config(&hub), cache.path());
    let info = client
        .repo_info(&RepoId::parse(REPO).unwrap(), &Revision::main())
        .await
        .unwrap();
    assert_eq!(info.files, vec![FILE.to_string(), "README.md".to_string()]);
    assert_eq!(info.commit.len(), 40);
}

#[tokio::test]
async fn an_unwritable_cache_is_a_clear_error() {
    let hub = hub().await;
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("hub");
    std::fs::create_dir(&cache).unwrap();
    let _guard = ReadOnly::make(&cache);
    let (repo, file) = ids(REPO, FILE);

    let err = client(config(&hub), &cache)
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap_err();

    assert!(matches!(err, HubError::Io { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&*cache.to_string_lossy()), "{message}");
    assert!(
        message.contains("Permission denied")
            || message.contains("not permitted")
            || message.contains("Read-only"),
        "{message}"
    );
}

/// Makes a directory unwritable even for root (chmod, then the immutable attribute), and
/// undoes it on drop so the temporary directory can be removed.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn make(dir: &std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"x").is_ok() {
            // Root ignores modes; the immutable attribute stops it.
            std::fs::remove_file(&probe).unwrap();
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot make {} read-only: running as root and `chattr +i` failed",
                dir.display()
            );
        }
        assert!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable",
            dir.display()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test]
async fn a_file_larger_than_the_free_space_is_refused_before_any_byte_is_fetched() {
    let cache = tempfile::tempdir().unwrap();
    let free = tabagent_hub::download::available_space(cache.path()).unwrap();
    // The hub announces more bytes than this disk has room for; none are ever read.
    let huge = free + (1 << 30);
    let mut repo = tabagent_testhub::Repo::new("big-org/huge");
    repo.files.push(tabagent_testhub::RepoFile {
        path: "huge.gguf".to_string(),
        source: model_file(),
        size: huge,
        sha256: "0".repeat(64),
        lfs: true,
    });
    let hub = tabagent_testhub::TestHub::start(vec![repo], None)
        .await
        .unwrap();
    let (repo, file) = ids("big-org/huge", "huge.gguf");

    let err = client(config(&hub), cache.path())
        .download(&repo, &Revision::main(), &file, &())
        .await
        .unwrap_err();

    match &err {
        HubError::DiskFull {
            file,
            needed,
            available,
            dir,
        } => {
            assert_eq!(file, "huge.gguf");
            assert_eq!(*needed, huge);
            assert!(*available < huge, "{available}");
            assert!(dir.starts_with(cache.path()), "{}", dir.display());
        }
        other => panic!("expected DiskFull, got {other}"),
    }
    assert!(err.to_string().contains("not enough disk space"), "{err}");
    assert_eq!(hub.stats().cdn_requests.load(Ordering::Relaxed), 0);
    let blobs = cache.path().join("models--big-org--huge/blobs");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|name| !name.to_string_lossy().contains("partial")),
        "no partial file is left behind: {left:?}"
    );
}
