//! The supervisor and client against the real worker (the environment and models scripts/test
//! prepares): frames streamed through MediaPipe and sent one by one on the vision lane, and
//! private directories left by killed runs cleaned up.

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future as _;
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

/// A black frame of raw RGB pixels (no face in it).
fn raw_frame(width: u32, height: u32) -> pb::VisionRequest {
    pb::VisionRequest {
        image: Some(pb::Image {
            source: Some(pb::image::Source::Raw(pb::RawFrame {
                width,
                height,
                rgb: vec![0; (width * height * 3) as usize].into(),
            })),
        }),
        ..frame(b"")
    }
}

/// The real worker, with the MediaPipe models as model `mediapipe`.
async fn start_worker() -> Supervisor {
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
    Supervisor::start(SupervisorConfig::new(environment), Arc::new(roots)).unwrap()
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

    let supervisor = start_worker().await;
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

    // Single frames take the vision lane: answers and errors as Vision.Analyze gives them.
    let reply = worker.analyze(frame(&astronaut)).await.unwrap();
    assert_eq!(reply.faces.len(), 1);
    let refused = worker.analyze(frame(b"no image")).await;
    assert!(
        matches!(refused, Err(WorkerError::InvalidInput(_))),
        "{refused:?}"
    );
    let mut unknown = frame(&astronaut);
    unknown.model_id = "no-such-model".into();
    let refused = worker.analyze(unknown).await;
    assert!(
        matches!(refused, Err(WorkerError::ModelNotFound(_))),
        "{refused:?}"
    );
    // The sockets are this user's alone.
    let private = supervisor.socket().parent().unwrap().to_path_buf();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&private).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "{}", private.display());
    assert!(private.join("vision.sock").exists());

    // Callers that go away, one while its frame is being sent (773 KB do not fit in the
    // socket's buffer), one while it waits for its answer, leave nothing behind for the calls
    // after them: each of those gets its own frame's answer, not a stale one, and is not stuck
    // behind half a request (the timeout turns that into a failure).
    for abandoned in [frame(&astronaut), raw_frame(40, 20)] {
        {
            let mut call = std::pin::pin!(worker.analyze(abandoned));
            let first_poll =
                std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
            assert!(first_poll.is_pending(), "answered within one poll");
        }
        for (width, height) in [(64, 32), (48, 16)] {
            let call = worker.analyze(raw_frame(width, height));
            let reply = tokio::time::timeout(std::time::Duration::from_secs(60), call)
                .await
                .expect("the call was answered")
                .unwrap();
            assert_eq!((reply.width, reply.height), (width, height));
        }
    }

    // Three times as many calls at once as the worker serves at once: each is answered, with
    // its own frame's answer.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let worker = worker.clone();
        let (width, height) = (16 + i, 8 + i);
        calls.spawn(async move {
            let reply = worker.analyze(raw_frame(width, height)).await.unwrap();
            assert_eq!((reply.width, reply.height), (width, height));
        });
    }
    let answered = calls.join_all().await;
    assert_eq!(answered.len(), 12);

    let pid = worker.pid().unwrap();
    supervisor.shutdown().await;
    // SIGTERM, and the worker is gone (reaped by the supervisor).
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists());
}

/// The worker's end of the vision lane, fuzzed over its real socket: requests as tabagent frames
/// them (`tests/corpus/vision-lane/requests`), mutated, each sent on a connection of its own.
/// Whatever comes back is whole answers only (a reply or an error, never a torn frame); nothing
/// hangs (each connection is read to its end under a timeout); the worker never dies; and after
/// it all a good frame is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_vision_lane_survives_fuzzed_requests() {
    use prost::Message as _;
    use std::io::{Read as _, Write as _};

    let supervisor = start_worker().await;
    let worker = supervisor.worker();
    // Once this answers, the worker and its lane are up.
    worker.analyze(raw_frame(8, 8)).await.unwrap();
    let pid = worker.pid().unwrap();
    let lane = supervisor.socket().parent().unwrap().join("vision.sock");

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus/vision-lane/requests");
    let seeds = tabagent_testhub::fuzz::corpus(&dir).unwrap();
    let (replies, errors) = tokio::task::spawn_blocking(move || {
        let (mut replies, mut errors) = (0usize, 0usize);
        tabagent_testhub::fuzz::run(&seeds, 4_000, |input| {
            let mut connection = std::os::unix::net::UnixStream::connect(&lane).unwrap();
            connection
                .set_read_timeout(Some(std::time::Duration::from_secs(60)))
                .unwrap();
            // The worker may close the connection before taking it all (a length over its limit).
            let _ = connection.write_all(input);
            let _ = connection.shutdown(std::net::Shutdown::Write);
            let mut answers = Vec::new();
            // A reset is a close with bytes of ours unread (it stopped at a bad length); what it
            // answered before is kept in `answers`. A timeout is a hang.
            match connection.read_to_end(&mut answers) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("the worker neither answered nor closed: {e}"),
            }
            let mut rest = answers.as_slice();
            while !rest.is_empty() {
                assert!(rest.len() >= 4, "a torn header: {rest:?}");
                let length = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                assert!(rest.len() >= 4 + length, "a torn answer");
                let answer = pb::LaneReply::decode(&rest[4..4 + length]).unwrap();
                match answer.outcome {
                    Some(pb::lane_reply::Outcome::Reply(_)) => replies += 1,
                    Some(pb::lane_reply::Outcome::Error(error)) => {
                        assert_ne!(error.code, 0, "an error without a code");
                        errors += 1;
                    }
                    None => panic!("an empty answer"),
                }
                rest = &rest[4 + length..];
            }
        });
        (replies, errors)
    })
    .await
    .unwrap();
    // Both ways through the worker were taken: frames answered, and frames refused.
    assert!(
        replies > 0 && errors > 0,
        "{replies} replies, {errors} errors"
    );

    assert_eq!(worker.pid(), Some(pid), "the worker was restarted");
    let reply = worker.analyze(raw_frame(24, 12)).await.unwrap();
    assert_eq!((reply.width, reply.height), (24, 12));
    supervisor.shutdown().await;
}
