//! Starts `tabagent serve` in a temporary data directory and talks to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const MODEL: &str = "smollm2";

pub fn smollm2_path() -> PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_SMOLLM2_GGUF") else {
        panic!("TABAGENT_TEST_SMOLLM2_GGUF is not set: run the tests with scripts/test, which fetches the model");
    };
    PathBuf::from(path)
}

/// The `tabagent` command with its data in `data_dir` and no inherited configuration.
pub fn tabagent(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tabagent"));
    command
        .env("TABAGENT_DATA_DIR", data_dir)
        .env_remove("TABAGENT_API_KEY")
        .env("NO_COLOR", "1")
        // Never the user's Hugging Face cache, hub or token.
        .env("HF_HUB_CACHE", data_dir.join("hf-hub"))
        .env_remove("HF_HOME")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if [
            "TABAGENT_SERVER__",
            "TABAGENT_MODELS__",
            "TABAGENT_ONNX__",
            "TABAGENT_MEMORY__",
            "TABAGENT_LIBRARIAN__",
        ]
        .iter()
        .any(|prefix| key_text.starts_with(prefix))
        {
            command.env_remove(key);
        }
    }
    // ONNX Runtime from the wheel scripts/test fetched, not whatever the machine has.
    if let Some(library) = std::env::var_os("TABAGENT_TEST_ORT_LIB") {
        command.env("TABAGENT_ONNX__RUNTIME_LIBRARY", library);
    }
    // PDFium from the pypdfium2 wheel scripts/test fetched.
    if let Some(library) = std::env::var_os("TABAGENT_TEST_PDFIUM") {
        command.env("TABAGENT_LIBRARIAN__PDFIUM_LIBRARY", library);
    }
    command
}

/// all-MiniLM-L6-v2 (safetensors), from `TABAGENT_TEST_MINILM_DIR`.
pub fn minilm_dir() -> PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_MINILM_DIR") else {
        panic!("TABAGENT_TEST_MINILM_DIR is not set: run the tests with scripts/test, which fetches the model");
    };
    PathBuf::from(path)
}

pub fn import(data_dir: &Path, file: &Path, name: &str) {
    let out = tabagent(data_dir)
        .arg("import")
        .arg(file)
        .arg("--name")
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running server, killed on drop.
pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    data_dir: PathBuf,
    /// The data directory when the server made it (removed when it goes).
    _owned: Option<tempfile::TempDir>,
    child: Child,
}

impl Server {
    /// A server with SmolLM2 imported as [`MODEL`] and the default model set to it.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[], |_| {})
    }

    /// Like [`Server::start`], with extra environment and a hook to prepare the data directory.
    pub fn start_with(args: &[&str], env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        import(data_dir.path(), &smollm2_path(), MODEL);
        prepare(data_dir.path());
        let mut server = Self::start_in(data_dir.path(), args, env);
        server._owned = Some(data_dir);
        server
    }

    /// A server over the data directory `data_dir`, which the caller keeps (across restarts)
    /// and has imported [`MODEL`] into.
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = tabagent(data_dir);
        command.args(["serve", "--port", "0", "--threads", "2"]);
        if !args.contains(&"--model") {
            command.args(["--model", MODEL]);
        }
        command.args(args);
        // Tests compare the engine's answers to repeated requests: the response cache would
        // answer those itself. Its own tests turn it back on.
        command.env("TABAGENT_RESPONSE_CACHE__ENABLED", "false");
        for (key, value) in env {
            command.env(key, value);
        }
        // Its log, for tests that read it (and for whoever debugs one).
        let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
        let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("tabagent serve exited ({status}) before it listened");
            };
            if let Some(url) = line.strip_prefix("tabagent listening on ") {
                break url.trim().to_string();
            }
        };
        let client = reqwest::Client::builder().build().unwrap();
        Server {
            url,
            client,
            data_dir: data_dir.to_path_buf(),
            _owned: None,
            child,
        }
    }

    /// What the server has logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.endpoint(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The whole body of a response, as text (a stream's events).
    pub async fn post_text(&self, path: &str, body: &Value) -> String {
        self.post(path, body).await.text().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.endpoint(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn delete_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .delete(self.endpoint(path))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `GET /metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        let response = self.client.get(self.endpoint("/metrics")).send().await;
        response.unwrap().text().await.unwrap()
    }

    /// The engine counters of [`MODEL`] from `/v1/health`.
    pub async fn model_health(&self) -> Value {
        let (_, health) = self.get_json("/v1/health").await;
        find(&health["models"], "name", MODEL)
    }
}

impl Server {
    /// Kills the server with SIGKILL (nothing of it runs afterwards).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The object in the array `list` whose `key` is `value` (null when there is none).
pub fn find(list: &Value, key: &str, value: &str) -> Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item[key] == value))
        .cloned()
        .unwrap_or(Value::Null)
}

pub fn chat(content: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0
    })
}

/// Asserts an OpenAI-style error body and returns its `error` object.
pub fn assert_error(status: u16, body: &Value, expected_status: u16) -> &Value {
    assert_eq!(status, expected_status, "unexpected status, body {body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    assert!(error["type"].is_string(), "no type in {body}");
    error
}
