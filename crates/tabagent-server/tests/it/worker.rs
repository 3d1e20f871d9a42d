//! The Python ML worker through the server, with the real models: MediaPipe on the astronaut
//! image, faster-whisper on speech espeak-ng spoke, and the worker killed under a request.
//! scripts/test makes the worker's environment (`tabagent worker setup`) and fetches the models.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::server::{assert_error, Server};

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{name} is not set: run the tests with scripts/test, which prepares the ML worker"
        ),
    }
}

/// The worker's environment for the tests, made by the first test that needs it
/// (`tabagent worker setup` takes a lock, so the others wait for it, then find it made).
fn prepared_worker_dir() -> PathBuf {
    prepare_worker(&[])
}

/// The same with Transformers installed too (`--transformers`: PyTorch, about 2.5 GB once).
fn prepared_worker_dir_with_transformers() -> PathBuf {
    prepare_worker(&["--transformers"])
}

fn prepare_worker(extra: &[&str]) -> PathBuf {
    let dir = env_path("TABAGENT_TEST_WORKER_DIR");
    let scratch = tempfile::tempdir().unwrap();
    let out = crate::server::tabagent(scratch.path())
        .args(["worker", "setup"])
        .args(extra)
        .env("TABAGENT_WORKER__DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tabagent worker setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A server running the worker from the environment scripts/test made, with the test models.
fn server() -> Server {
    let worker_dir = prepared_worker_dir();
    let mediapipe = env_path("TABAGENT_TEST_MEDIAPIPE_DIR");
    let whisper = env_path("TABAGENT_TEST_WHISPER_DIR");
    worker_server(
        &worker_dir,
        &[
            (
                "TABAGENT_MODELS__DIRECTORIES__MEDIAPIPE",
                mediapipe.to_str().unwrap(),
            ),
            ("TABAGENT_WORKER__SPEECH_MODEL", "whisper"),
        ],
        // The speech model is linked in as a user would (`tabagent worker link`).
        |data_dir| link(data_dir, "whisper", &whisper),
    )
}

/// A server running the worker from `worker_dir`, with `env` and `prepare` as
/// [`Server::start_with`] takes them.
fn worker_server(
    worker_dir: &std::path::Path,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> Server {
    let mut all = vec![
        ("TABAGENT_WORKER__DIR", worker_dir.to_str().unwrap()),
        ("TABAGENT_WORKER__MODE", "auto"),
        ("TABAGENT_WORKER__THREADS", "2"),
    ];
    all.extend_from_slice(env);
    Server::start_with(&[], &all, prepare)
}

/// `tabagent worker link NAME DIR`, which must succeed.
fn link(data_dir: &std::path::Path, name: &str, dir: &std::path::Path) {
    succeeded(
        crate::server::tabagent(data_dir)
            .args(["worker", "link", name])
            .arg(dir),
    );
}

/// Runs `command`, which must succeed; its standard output.
fn succeeded(command: &mut std::process::Command) -> Vec<u8> {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn astronaut() -> Vec<u8> {
    std::fs::read(env_path("TABAGENT_TEST_ASTRONAUT_PNG")).unwrap()
}

/// Runs `script` with the worker's own Python (its OpenCV) on `args`; its standard output.
fn worker_python(script: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    succeeded(
        std::process::Command::new(prepared_worker_dir().join("venv/bin/python"))
            .args(["-c", script])
            .args(args),
    )
}

/// The astronaut encoded as `extension` (`.jpg`, `.webp`, or `.png` in grey), by OpenCV.
fn astronaut_as(extension: &str, grey: bool) -> Vec<u8> {
    let script = r"
import sys, cv2
image = cv2.imread(sys.argv[1], cv2.IMREAD_GRAYSCALE if sys.argv[3] == '1' else cv2.IMREAD_COLOR)
ok, encoded = cv2.imencode(sys.argv[2], image)
assert ok
sys.stdout.buffer.write(encoded.tobytes())
";
    let png = env_path("TABAGENT_TEST_ASTRONAUT_PNG");
    let grey = if grey { "1" } else { "0" };
    worker_python(
        script,
        &[png.as_os_str(), extension.as_ref(), grey.as_ref()],
    )
}

/// Waits (polling) until `check` holds; fails after 60 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn worker_status(server: &Server) -> Value {
    server.get_json("/v1/worker").await.1
}

async fn vision(server: &Server, task: &str, image: Vec<u8>, query: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image).file_name("astronaut.png"),
    );
    server
        .client
        .post(server.endpoint(&format!("/v1/vision/{task}{query}")))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn mediapipe_finds_the_astronauts_face_mesh_pose_and_outline() {
    let server = server();
    let (status, body) = json_of(vision(&server, "face", astronaut(), "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(512), Some(512))
    );
    let faces = body["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{body}");
    let face = &faces[0];
    let (x, y, w, h) = (
        face["box"]["x"].as_i64().unwrap(),
        face["box"]["y"].as_i64().unwrap(),
        face["box"]["width"].as_i64().unwrap(),
        face["box"]["height"].as_i64().unwrap(),
    );
    // Her face is in the upper middle of the picture, about a fifth of its width.
    assert!((120..260).contains(&x) && (30..160).contains(&y), "{face}");
    assert!((60..160).contains(&w) && (60..160).contains(&h), "{face}");
    assert!(face["score"].as_f64().unwrap() > 0.7, "{face}");
    assert_eq!(face["keypoints"].as_array().unwrap().len(), 6);

    // PNGs are decoded by tabagent, other formats by the worker's OpenCV: the same face either
    // way, within a few pixels (JPEG and WebP are lossy; grey has less to go on).
    for (extension, grey) in [(".jpg", false), (".webp", false), (".png", true)] {
        let (status, other) =
            json_of(vision(&server, "face", astronaut_as(extension, grey), "").await).await;
        assert_eq!(status, 200, "{extension}: {other}");
        let found = &other["faces"][0]["box"];
        for (key, expected) in [("x", x), ("y", y), ("width", w), ("height", h)] {
            let got = found[key].as_i64().unwrap();
            assert!(
                (got - expected).abs() <= 8,
                "{extension} grey={grey}: {other} vs {face}"
            );
        }
    }

    // The same image as base64 JSON gives the same face.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(astronaut());
    let (status, again) = server
        .post_json("/v1/vision/face", &serde_json::json!({ "image": encoded }))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["faces"][0]["box"], face["box"]);

    let (status, body) = json_of(vision(&server, "face-mesh", astronaut(), "").await).await;
    assert_eq!(status, 200, "{body}");
    let mesh = &body["face_meshes"][0];
    assert_eq!(mesh["landmarks"].as_array().unwrap().len(), 478);
    assert_eq!(mesh["blendshapes"].as_object().unwrap().len(), 52);
    for eye in ["left_x", "left_y", "right_x", "right_y"] {
        let value = mesh["gaze"][eye].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&value), "{eye} = {value}");
    }
    // The mesh lies on the face the detector found.
    let nose = &mesh["landmarks"][1];
    let nose_x = nose["x"].as_f64().unwrap() * 512.0;
    assert!(
        (x as f64..(x + w) as f64).contains(&nose_x),
        "nose at {nose_x}, face {face}"
    );

    let (status, body) = json_of(vision(&server, "pose", astronaut(), "").await).await;
    assert_eq!(status, 200, "{body}");
    let pose = &body["poses"][0];
    assert_eq!(pose["landmarks"].as_array().unwrap().len(), 33);
    assert_eq!(pose["world_landmarks"].as_array().unwrap().len(), 33);
    let elbow = pose["angles"]["left_elbow"].as_f64().unwrap();
    assert!((0.0..=180.0).contains(&elbow), "{elbow}");

    // No hand is visible in the picture: an honest empty list.
    let (status, body) = json_of(vision(&server, "hands", astronaut(), "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hands"], serde_json::json!([]));

    // Two open hands, a right one on the left of the picture and its mirror image on the right
    // (scripts/lib/make_hands_image.py): 21 points each inside its own half, fingers up,
    // handedness by side, and the gesture recogniser's name for an open hand.
    let two_hands = include_bytes!("../../../../tests/images/two-hands.png").to_vec();
    let (status, body) = json_of(vision(&server, "hands", two_hands, "").await).await;
    assert_eq!(status, 200, "{body}");
    let mut hands = body["hands"].as_array().unwrap().clone();
    assert_eq!(hands.len(), 2, "{body}");
    let x_of = |hand: &Value, point: usize| hand["landmarks"][point]["x"].as_f64().unwrap();
    hands.sort_by(|a, b| x_of(a, 0).total_cmp(&x_of(b, 0)));
    for (hand, (side, half)) in hands.iter().zip([("Right", 0.0..0.5), ("Left", 0.5..1.0)]) {
        let points = hand["landmarks"].as_array().unwrap();
        assert_eq!(points.len(), 21, "{hand}");
        for point in points {
            let x = point["x"].as_f64().unwrap();
            let y = point["y"].as_f64().unwrap();
            assert!(
                half.contains(&x) && (0.0..1.0).contains(&y),
                "{side}: {point}"
            );
        }
        // Landmark 0 is the wrist, 12 the middle fingertip.
        let (wrist_y, tip_y) = (
            points[0]["y"].as_f64().unwrap(),
            points[12]["y"].as_f64().unwrap(),
        );
        assert!(
            tip_y < wrist_y - 0.3,
            "{side}: fingertip {tip_y}, wrist {wrist_y}"
        );
        assert_eq!(hand["handedness"], side, "{hand}");
        assert_eq!(hand["gesture"], "Open_Palm", "{hand}");
    }

    let (status, body) = json_of(vision(&server, "holistic", astronaut(), "").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["face_meshes"].as_array().unwrap().len(), 1);
    assert_eq!(body["poses"].as_array().unwrap().len(), 1);

    // Segmentation: a PNG mask covering part of the picture, not all or none of it.
    let response = vision(&server, "segmentation", astronaut(), "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let share: f64 = response.headers()["x-tabagent-foreground-fraction"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.1..0.9).contains(&share), "{share}");
    let png = response.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let blurred = vision(&server, "segmentation", astronaut(), "?effect=blur").await;
    assert_eq!(blurred.status(), 200);
    let blurred = blurred.bytes().await.unwrap();
    assert!(blurred.starts_with(b"\x89PNG") && blurred != png);
    let (status, body) = json_of(
        vision(
            &server,
            "segmentation",
            astronaut(),
            "?format=json&effect=replace&background=%2300ff00",
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["mask_png"].as_str().unwrap().len() > 100);
    assert!(body["image_png"].as_str().unwrap().len() > 100);

    // The worker holds the MediaPipe model, and says what it costs.
    let status = worker_status(&server).await;
    assert_eq!(status["running"], true, "{status}");
    let model = &status["models"][0];
    assert_eq!(model["id"], "mediapipe", "{status}");
    assert!(model["ram_bytes"].as_u64().unwrap() > 0, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_images_audio_and_tasks_are_the_callers_mistake() {
    let server = server();
    // Bytes that are no image, and formats whose size is not read from a header here (a GIF,
    // a TIFF): refused before the worker sees them.
    for image in [
        b"not an image at all".to_vec(),
        b"GIF89a\x10\x00\x10\x00\x80\x00\x00".to_vec(),
        b"II*\x00\x08\x00\x00\x00".to_vec(),
    ] {
        let (status, body) = json_of(vision(&server, "face", image, "").await).await;
        assert!(
            assert_error(status, &body, 400)["message"]
                .as_str()
                .unwrap()
                .contains("not PNG, JPEG, WebP or BMP"),
            "{body}"
        );
    }
    // A PNG whose header claims 9000 × 512 pixels: refused from the header alone.
    let mut huge = astronaut();
    huge[16..20].copy_from_slice(&9000u32.to_be_bytes());
    let crc = crc32fast::hash(&huge[12..29]);
    huge[29..33].copy_from_slice(&crc.to_be_bytes());
    let (status, body) = json_of(vision(&server, "face", huge, "").await).await;
    let error = assert_error(status, &body, 400);
    assert_eq!(error["param"], "image", "{body}");
    assert!(
        error["message"].as_str().unwrap().contains("9000×512"),
        "{body}"
    );
    let (status, body) = json_of(vision(&server, "x-ray", astronaut(), "").await).await;
    assert_eq!(assert_error(status, &body, 400)["param"], "task");
    let (status, body) =
        json_of(vision(&server, "face", astronaut(), "?min_confidence=7").await).await;
    assert_eq!(assert_error(status, &body, 400)["param"], "min_confidence");
    let empty = server
        .client
        .post(server.endpoint("/v1/vision/face"))
        .header("content-type", "image/png")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(empty).await;
    assert_eq!(assert_error(status, &body, 400)["param"], "image");

    let transcribe = |audio: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .text("model", "whisper-1")
            .part(
                "file",
                reqwest::multipart::Part::bytes(audio).file_name("a.wav"),
            );
        server
            .client
            .post(server.endpoint("/v1/audio/transcriptions"))
            .multipart(form)
            .send()
    };
    // A WAV header with no samples, and bytes that are no audio at all.
    let mut silent = b"RIFF".to_vec();
    silent.extend(36u32.to_le_bytes());
    silent.extend(b"WAVEfmt ");
    silent.extend(16u32.to_le_bytes());
    silent.extend(1u16.to_le_bytes()); // PCM
    silent.extend(1u16.to_le_bytes()); // mono
    silent.extend(16_000u32.to_le_bytes());
    silent.extend(32_000u32.to_le_bytes());
    silent.extend(2u16.to_le_bytes());
    silent.extend(16u16.to_le_bytes());
    silent.extend(b"data");
    silent.extend(0u32.to_le_bytes());
    for audio in [silent, b"definitely not audio".to_vec()] {
        let (status, body) = json_of(transcribe(audio).await.unwrap()).await;
        assert_error(status, &body, 400);
    }
    // Two hours and a minute of silence in 1.3 MB of FLAC: refused from its header, the limit
    // named, before its 58 million samples are decoded.
    let long = worker_python(
        r#"
import io, sys, av, numpy as np
buffer = io.BytesIO()
out = av.open(buffer, "w", format="flac")
stream = out.add_stream("flac", rate=8000, layout="mono")
minute = np.zeros((1, 8000 * 60), dtype=np.int16)
for i in range(121):
    frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, i * minute.shape[1]
    for packet in stream.encode(frame):
        out.mux(packet)
for packet in stream.encode(None):
    out.mux(packet)
out.close()
sys.stdout.buffer.write(buffer.getvalue())
"#,
        &[],
    );
    let (status, body) = json_of(transcribe(long).await.unwrap()).await;
    let message = assert_error(status, &body, 400)["message"].to_string();
    assert!(message.contains("7200 seconds"), "{body}");
    let (status, body) = json_of(
        server
            .client
            .post(server.endpoint("/v1/audio/transcriptions"))
            .multipart(reqwest::multipart::Form::new().text("model", "whisper-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "file");
    // The worker is still serving after all that.
    assert_eq!(worker_status(&server).await["running"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn speech_is_transcribed_as_openai_clients_expect() {
    let server = server();
    let wav = std::fs::read(env_path("TABAGENT_TEST_SPEECH_WAV")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("response_format", "verbose_json")
        .part(
            "file",
            reqwest::multipart::Part::bytes(wav).file_name("hello.wav"),
        );
    let (status, body) = json_of(
        server
            .client
            .post(server.endpoint("/v1/audio/transcriptions"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().unwrap().to_lowercase();
    // espeak-ng said "hello world"; tiny.en hears robotic speech roughly ("The Low World").
    assert!(text.contains("world"), "{text}");
    assert_eq!(body["language"], "en");
    assert!(body["duration"].as_f64().unwrap() > 0.5, "{body}");
    assert!(!body["segments"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_request_is_back_and_the_server_never_went_down() {
    let server = std::sync::Arc::new(server());
    until("the worker serves", || async {
        worker_status(&server).await["running"] == true
    })
    .await;
    let first_pid = worker_status(&server).await["pid"].as_u64().unwrap();
    // Load the model first, so the killed request is the analysis itself.
    assert_eq!(vision(&server, "pose", astronaut(), "").await.status(), 200);

    let in_flight = {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(
            async move { json_of(vision(&server, "holistic", astronaut(), "").await).await },
        )
    };
    until("the request is with the worker", || async {
        worker_status(&server).await["in_flight"].as_u64() == Some(1)
    })
    .await;
    let killed = Command::new("kill")
        .args(["-KILL", &first_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Tried again on the new worker, or a clean 503: never a hang or a 500.
    let (status, body) = in_flight.await.unwrap();
    assert!(status == 200 || status == 503, "{status} {body}");
    if status == 503 {
        assert_eq!(body["error"]["code"], "worker_unavailable", "{body}");
    }
    until("a new worker serves", || async {
        let status = worker_status(&server).await;
        status["running"] == true && status["pid"].as_u64() != Some(first_pid)
    })
    .await;
    let status = worker_status(&server).await;
    assert!(status["restarts"].as_u64().unwrap() >= 1, "{status}");
    // How long the server was without a worker is reported (a figure, not a timing assertion).
    assert!(status["downtime_ms"].is_u64(), "{status}");
    eprintln!(
        "worker back after {} ms (start-up {} ms)",
        status["downtime_ms"], status["startup_ms"]
    );
    assert_eq!(vision(&server, "face", astronaut(), "").await.status(), 200);
    // The server answered all along.
    assert_eq!(server.get_json("/v1/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_does_not_outlive_a_killed_server() {
    let mut server = server();
    until("the worker serves", || async {
        worker_status(&server).await["running"] == true
    })
    .await;
    let pid = worker_status(&server).await["pid"].as_u64().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    server.kill();
    // SIGKILL leaves tabagent no chance to stop it: the parent-death signal does.
    until("the worker is gone", || {
        let gone = !proc_dir.exists()
            || std::fs::read_to_string(proc_dir.join("stat"))
                .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"));
        async move { gone }
    })
    .await;
}

/// `kind` and `engine` of `id` in `GET /v1/models`.
async fn listed(server: &Server, id: &str) -> (String, String) {
    let (status, body) = server.get_json("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let model = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("`{id}` is not listed: {body}"));
    (
        model["kind"].as_str().unwrap().to_string(),
        model["engine"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_model_goes_to_the_engine_its_files_call_for() {
    let server = server();
    let pair = |kind: &str, engine: &str| (kind.to_string(), engine.to_string());
    assert_eq!(
        listed(&server, crate::server::MODEL).await,
        pair("llm", "llama.cpp")
    );
    assert_eq!(
        listed(&server, "mediapipe").await,
        pair("vision", "python-worker")
    );
    assert_eq!(
        listed(&server, "whisper").await,
        pair("speech", "python-worker")
    );
    // Asked of the wrong endpoint, a model is a 400 naming what it is, whichever engine runs it.
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": "mediapipe", "input": "hello"}),
        )
        .await;
    let error = assert_error(status, &body, 400);
    assert_eq!(error["code"], "model_kind_mismatch", "{body}");
    assert!(
        error["message"].as_str().unwrap().contains("vision"),
        "{body}"
    );
    for model in ["whisper", crate::server::MODEL] {
        let (status, body) =
            json_of(vision(&server, "face", astronaut(), &format!("?model={model}")).await).await;
        assert_eq!(
            assert_error(status, &body, 400)["code"],
            "model_kind_mismatch"
        );
    }
    let (status, body) = server
        .post_json(
            "/v1/chat/completions",
            &serde_json::json!({"model": "whisper", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        assert_error(status, &body, 400)["code"],
        "model_kind_mismatch"
    );
    let (status, body) =
        json_of(vision(&server, "face", astronaut(), "?model=no-such-model").await).await;
    assert_eq!(assert_error(status, &body, 404)["code"], "model_not_found");
    // The right model by name works as the default one does.
    let (status, body) =
        json_of(vision(&server, "face", astronaut(), "?model=mediapipe").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["faces"].as_array().unwrap().len(), 1);

    // A directory holding nothing the worker runs is refused by `link`, in one line.
    let empty = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let out = crate::server::tabagent(scratch.path())
        .args(["worker", "link", "nothing"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("holds no model the worker runs"),
        "{stderr}"
    );
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn vectors(body: &Value) -> Vec<Vec<f64>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sentence_transformers_in_the_worker_agree_with_onnx_runtime_in_process() {
    let worker_dir = prepared_worker_dir_with_transformers();
    let minilm = crate::server::minilm_dir();
    // One model twice: in models.directories it runs in-process on ONNX Runtime; linked for the
    // worker, sentence-transformers runs it on PyTorch.
    let server = worker_server(
        &worker_dir,
        &[(
            "TABAGENT_MODELS__DIRECTORIES__MINILM",
            minilm.to_str().unwrap(),
        )],
        |data_dir| link(data_dir, "minilm-st", &minilm),
    );
    let pair = |kind: &str, engine: &str| (kind.to_string(), engine.to_string());
    assert_eq!(
        listed(&server, "minilm").await,
        pair("embedding", "onnxruntime")
    );
    assert_eq!(
        listed(&server, "minilm-st").await,
        pair("embedding", "python-worker")
    );
    let sentences = [
        "A man is eating food.",
        "The weather is lovely today.",
        "Rust makes systems programming safer without a garbage collector.",
    ];
    let embed = |model: &'static str, extra: Value| {
        let mut request = serde_json::json!({"model": model, "input": sentences});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let server = &server;
        async move { server.post_json("/v1/embeddings", &request).await }
    };
    let (status, onnx) = embed("minilm", serde_json::json!({})).await;
    assert_eq!(status, 200, "{onnx}");
    let (status, torch) = embed("minilm-st", serde_json::json!({})).await;
    assert_eq!(status, 200, "{torch}");
    let (onnx_vectors, torch_vectors) = (vectors(&onnx), vectors(&torch));
    assert_eq!(torch_vectors.len(), sentences.len());
    for (a, b) in onnx_vectors.iter().zip(&torch_vectors) {
        assert_eq!(b.len(), 384);
        let similarity = cosine(a, b);
        assert!(similarity >= 0.999, "cosine {similarity}");
    }
    // The same tokenizer counts the same tokens.
    assert_eq!(
        torch["usage"]["prompt_tokens"],
        onnx["usage"]["prompt_tokens"]
    );
    assert_eq!(torch["model"], "minilm-st");

    // Cut to 128 values, like the in-process engine.
    let (status, cut) = embed("minilm-st", serde_json::json!({"dimensions": 128})).await;
    assert_eq!(status, 200, "{cut}");
    assert!(vectors(&cut).iter().all(|v| v.len() == 128));
    // Token ids are for in-process encoders; over-long text is cut unless told not to.
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": "minilm-st", "input": [101, 7592, 102]}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "input");
    let long = "word ".repeat(2000);
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": "minilm-st", "input": long, "truncate": false}),
        )
        .await;
    assert_error(status, &body, 400);
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": "minilm-st", "input": long}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, onnx_long) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": "minilm", "input": long}),
        )
        .await;
    assert_eq!(
        body["usage"]["prompt_tokens"],
        onnx_long["usage"]["prompt_tokens"]
    );
    let similarity = cosine(&vectors(&body)[0], &vectors(&onnx_long)[0]);
    assert!(similarity >= 0.999, "cosine {similarity}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transformers_language_model_chats_through_the_same_endpoints() {
    let worker_dir = prepared_worker_dir_with_transformers();
    // SmolLM2-135M-Instruct twice: its GGUF on llama.cpp in-process (`smollm2`), and the same
    // weights dequantized into safetensors on Transformers in the worker.
    let transformers = env_path("TABAGENT_TEST_SMOLLM2_TRANSFORMERS_DIR");
    let server = worker_server(
        &worker_dir,
        &[(
            "TABAGENT_MODELS__DIRECTORIES__SMOLLM2_ST",
            transformers.to_str().unwrap(),
        )],
        |_| {},
    );
    assert_eq!(
        listed(&server, "smollm2_st").await,
        ("llm".to_string(), "python-worker".to_string())
    );
    let question = |model: &str, extra: Value| {
        let mut request = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 24,
        });
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        request
    };
    let (status, worker) = server
        .post_json(
            "/v1/chat/completions",
            &question("smollm2_st", serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 200, "{worker}");
    let (status, llama) = server
        .post_json(
            "/v1/chat/completions",
            &question(crate::server::MODEL, serde_json::json!({})),
        )
        .await;
    assert_eq!(status, 200, "{llama}");
    let answer = worker["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{worker}");
    // One chat template, one tokenizer: the same prompt, token for token.
    assert_eq!(
        worker["usage"]["prompt_tokens"], llama["usage"]["prompt_tokens"],
        "{worker} {llama}"
    );
    assert!(worker["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Streamed, with a stop string: the text ends before it, and the reason says so.
    let response = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .json(&question(
            "smollm2_st",
            serde_json::json!({"stream": true, "stop": ["Paris"]}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let mut streamed = String::new();
    let mut reason = None;
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(text);
        }
        if let Some(r) = chunk["choices"][0]["finish_reason"].as_str() {
            reason = Some(r.to_string());
        }
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert_eq!(reason.as_deref(), Some("stop"), "{body}");
    assert!(!streamed.contains("Paris"), "{streamed}");
    assert!(answer.starts_with(&streamed), "{streamed} / {answer}");

    // What Transformers cannot honour is refused, not ignored.
    let (status, body) = server
        .post_json(
            "/v1/chat/completions",
            &question(
                "smollm2_st",
                serde_json::json!({"response_format": {"type": "json_object"}}),
            ),
        )
        .await;
    assert_error(status, &body, 400);
    // A raw completion goes to the same engine.
    let (status, body) = server
        .post_json(
            "/v1/completions",
            &serde_json::json!({"model": "smollm2_st", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["choices"][0]["text"].as_str().unwrap().is_empty(),
        "{body}"
    );
}

/// The astronaut as a one-frame Y4M video (Chromium's fake camera plays it in a loop), written
/// by OpenCV.
fn astronaut_video(out: &std::path::Path) {
    let script = r"
import sys, cv2
bgr = cv2.imread(sys.argv[1], cv2.IMREAD_COLOR)
h, w = bgr.shape[:2]
yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
with open(sys.argv[2], 'wb') as f:
    f.write(f'YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n'.encode())
    f.write(b'FRAME\n')
    f.write(yuv.tobytes())
";
    let png = env_path("TABAGENT_TEST_ASTRONAUT_PNG");
    worker_python(script, &[png.as_os_str(), out.as_os_str()]);
}

#[tokio::test]
async fn faces_are_found_in_a_browsers_camera_over_webrtc() {
    let server = server();
    let video = tempfile::tempdir().unwrap();
    let y4m = video.path().join("astronaut.y4m");
    astronaut_video(&y4m);
    let camera = format!("--use-file-for-fake-video-capture={}", y4m.display());
    let options = serde_json::json!({"vision": "face"});
    let outcome = crate::webrtc::run_page(&server.url, options, &[camera]).await;
    assert_eq!(outcome["errors"], serde_json::json!([]), "{outcome}");
    let found = &outcome["vision"];
    assert_eq!(found["task"], "face", "{outcome}");
    assert_eq!(
        (found["width"].as_u64(), found["height"].as_u64()),
        (Some(512), Some(512)),
        "{outcome}"
    );
    let faces = found["result"]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{outcome}");
    // The same face as the PNG gives over HTTP, within what video compression moves it.
    let (status, over_http) = json_of(vision(&server, "face", astronaut(), "").await).await;
    assert_eq!(status, 200, "{over_http}");
    let expected = &over_http["faces"][0]["box"];
    for side in ["x", "y", "width", "height"] {
        let got = faces[0]["box"][side].as_i64().unwrap();
        let want = expected[side].as_i64().unwrap();
        assert!(
            (got - want).abs() <= 12,
            "{side}: {got} over WebRTC, {want} over HTTP"
        );
    }
}
