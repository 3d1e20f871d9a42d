//! The supervisor and client against the real worker (the environment and models scripts/test
//! prepares): frames streamed through MediaPipe, and private directories left by killed runs
//! cleaned up.

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tabagent_worker::{
    pb, Environment, EnvironmentConfig, ModelDir, ModelRoots, Supervisor, SupervisorConfig,
    WorkerError,
};
use tokio_stream::StreamExt;

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{name} is not set: run the tests with scripts/test, which prepares the ML worker"
        ),
    }
}

struct Models(BTreeMap<String, PathBuf>);

impl ModelRoots for Models {
    fn locate(&self, model_id: &str) -> Option<ModelDir> {
        self.0.get(model_id).map(|dir| ModelDir {
            files: dir.clone(),
            boundary: dir.clone(),
        })
    }
}

fn frame(image: &[u8]) -> pb::VisionRequest {
    pb::VisionRequest {
        task: pb::VisionTask::Face as i32,
        image: Some(pb::Image {
            source: Some(pb::image::Source::Encoded(image.to_vec().into())),
        }),
        model_id: "mediapipe".into(),
        min_confidence: 0.5,
        max_results: 2,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_stream_through_the_worker_in_order_and_stale_directories_go() {
    // A directory a killed tabagent left (its owner is gone), and one whose owner lives.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let stale = tempfile::Builder::new()
        .prefix("tabagent-worker-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::write(stale.join("owner.pid"), dead_pid.to_string()).unwrap();
    let alive = tempfile::Builder::new()
        .prefix("tabagent-worker-")
        .tempdir()
        .unwrap();
    std::fs::write(
        alive.path().join("owner.pid"),
        std::process::id().to_string(),
    )
    .unwrap();

    let environment = EnvironmentConfig {
        dir: env_path("TABAGENT_TEST_WORKER_DIR"),
        python: PathBuf::from("python3"),
        transformers: false,
    };
    Environment::prepare(&environment).await.unwrap();
    let roots = Models(BTreeMap::from([(
        "mediapipe".to_string(),
        env_path("TABAGENT_TEST_MEDIAPIPE_DIR"),
    )]));
    let supervisor =
        Supervisor::start(SupervisorConfig::new(environment), Arc::new(roots)).unwrap();
    assert!(!stale.exists(), "a dead tabagent's directory is removed");
    assert!(alive.path().exists(), "a live one's is not");

    let worker = supervisor.worker();
    let astronaut = std::fs::read(env_path("TABAGENT_TEST_ASTRONAUT_PNG")).unwrap();
    let frames = vec![frame(&astronaut), frame(&astronaut), frame(&astronaut)];
    let replies: Vec<_> = worker
        .analyze_stream(tokio_stream::iter(frames))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(replies.len(), 3);
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.faces.len(), 1);
        assert_eq!((reply.width, reply.height), (512, 512));
    }

    // A bad frame ends the stream with the caller's mistake, after the good one's reply.
    let frames = vec![frame(&astronaut), frame(b"no image")];
    let replies: Vec<_> = worker
        .analyze_stream(tokio_stream::iter(frames))
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].is_ok());
    assert!(
        matches!(replies[1], Err(WorkerError::InvalidInput(_))),
        "{replies:?}"
    );

    // A big frame goes to the worker as a file in the private directory, gone after the reply.
    let reply = worker.analyze(frame(&astronaut)).await.unwrap();
    assert_eq!(reply.faces.len(), 1);
    let frames_dir = supervisor.frames_dir();
    // The frames and the sockets are this user's alone.
    for private in [
        frames_dir.clone(),
        supervisor.socket().parent().unwrap().to_path_buf(),
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "{}", private.display());
    }
    // Nothing but the owner's pid is left.
    let left: Vec<_> = std::fs::read_dir(&frames_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".frame"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The worker reads only plain names in that directory: nothing beside or above it.
    for name in ["../owner.pid", "/etc/passwd", ".hidden", "missing.frame"] {
        let mut request = frame(&astronaut);
        request.image = Some(pb::Image {
            source: Some(pb::image::Source::SharedFile(name.to_string())),
        });
        let refused = worker.analyze(request).await;
        assert!(
            matches!(refused, Err(WorkerError::InvalidInput(_))),
            "{name}: {refused:?}"
        );
    }

    let pid = worker.pid().unwrap();
    supervisor.shutdown().await;
    // SIGTERM, and the worker is gone (reaped by the supervisor).
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists());
}
