//! Chrome native messaging: `tabagent native` driven over its pipes as a browser would (framing,
//! streaming, pieces of long replies, bad messages, cancelling, relaying to a running server),
//! `serve --mode all`, the host manifests, and a real headless Chromium running the test
//! extension in `tests/browser/native-extension`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::server::{import, smollm2_path, tabagent, Server, MODEL};

/// Generous: a hang fails the test instead of stalling the run.
const PATIENCE: Duration = Duration::from_secs(300);

/// `tabagent native` on pipes.
struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl Host {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> Host {
        let mut command = tabagent(data_dir);
        command
            .arg("native")
            .env("TABAGENT_NATIVE__CONNECT", "in-process")
            .env("TABAGENT_RESPONSE_CACHE__ENABLED", "false");
        for (key, value) in env {
            command.env(key, value);
        }
        Host::spawn(command)
    }

    fn spawn(command: std::process::Command) -> Host {
        let mut child = tokio::process::Command::from(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Host {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().unwrap(),
            child,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(&u32::try_from(bytes.len()).unwrap().to_ne_bytes())
            .await
            .unwrap();
        stdin.write_all(bytes).await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn send(&mut self, message: &Value) {
        self.send_raw(message.to_string().as_bytes()).await;
    }

    /// The next message as it came (a piece of a long reply stays a piece), and its size.
    async fn next_raw(&mut self) -> (Value, usize) {
        let read = async {
            let mut header = [0u8; 4];
            self.stdout.read_exact(&mut header).await.unwrap();
            let mut body = vec![0u8; u32::from_ne_bytes(header) as usize];
            self.stdout.read_exact(&mut body).await.unwrap();
            let size = body.len();
            (
                serde_json::from_slice(&body).expect("stdout carries only JSON messages"),
                size,
            )
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the host did not answer")
    }

    /// The next reply, its pieces joined.
    async fn next(&mut self) -> Value {
        let mut text = String::new();
        loop {
            let (message, size) = self.next_raw().await;
            assert!(
                size <= 1024 * 1024,
                "a message of {size} bytes exceeds Chrome's 1 MiB"
            );
            let Some(part) = message.get("part") else {
                assert!(text.is_empty(), "a piece run was interrupted by {message}");
                return message;
            };
            text.push_str(part.as_str().unwrap());
            if message["more"] == false {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// Sends a request and waits for its (whole, non-streamed) reply.
    async fn call(&mut self, message: Value) -> Value {
        let id = message["id"].clone();
        self.send(&message).await;
        let reply = self.next().await;
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    /// Streams a request: the text of its deltas, its events, and its finish reason.
    async fn stream(&mut self, message: Value) -> (String, usize, String) {
        let id = message["id"].clone();
        self.send(&message).await;
        let (mut text, mut events, mut finish) = (String::new(), 0, String::new());
        loop {
            let reply = self.next().await;
            assert_eq!(reply["id"], id, "{reply}");
            assert_eq!(reply["status"], 200, "{reply}");
            if reply["done"] == true {
                return (text, events, finish);
            }
            events += 1;
            let choice = &reply["event"]["choices"][0];
            text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if let Some(reason) = choice["finish_reason"].as_str() {
                finish = reason.to_string();
            }
        }
    }

    /// Closes stdin (the browser closing the port) and waits for the host to exit.
    async fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the host did not exit")
            .unwrap()
    }
}

fn chat_body(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

fn data_dir_with_smollm2() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &smollm2_path(), MODEL);
    dir
}

#[tokio::test]
async fn native_host_serves_the_api_streams_and_survives_bad_messages() {
    let data = data_dir_with_smollm2();
    let mut host = Host::start(
        data.path(),
        &[("TABAGENT_NATIVE__MAX_MESSAGE_BYTES", "65536")],
    );

    let models = host
        .call(json!({"id": "models", "path": "/v1/models"}))
        .await;
    assert_eq!(models["status"], 200, "{models}");
    let ids: Vec<&str> = models["body"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&MODEL), "{models}");

    // The streamed answer is the non-streamed one, delta by delta (greedy decoding).
    let whole = host
        .call(json!({"id": 1, "path": "/v1/chat/completions", "body": chat_body("Name three colours.", 24, false)}))
        .await;
    assert_eq!(whole["status"], 200, "{whole}");
    let expected = whole["body"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let (text, events, finish) = host
        .stream(json!({"id": 2, "method": "POST", "path": "/v1/chat/completions", "body": chat_body("Name three colours.", 24, true)}))
        .await;
    assert_eq!(text, expected);
    assert!(events > 2, "{events} events");
    assert_eq!(
        finish,
        whole["body"]["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
    );

    // Bad messages get errors; the host keeps serving.
    host.send_raw(b"{\"id\": 3, \"path\": ").await;
    let reply = host.next().await;
    assert_eq!(
        (reply["id"].clone(), reply["status"].clone()),
        (Value::Null, json!(400)),
        "{reply}"
    );
    assert_eq!(reply["body"]["error"]["code"], "invalid_json");
    host.send_raw(&vec![b' '; 100_000]).await;
    let reply = host.next().await;
    assert_eq!(reply["status"], 413, "{reply}");
    assert_eq!(reply["body"]["error"]["code"], "message_too_large");
    let reply = host.call(json!({"id": 4, "body": {}})).await;
    assert_eq!(reply["status"], 400);
    assert_eq!(reply["body"]["error"]["param"], "path");
    let reply = host
        .call(json!({"id": 5, "path": "/v1/nothing-here"}))
        .await;
    assert_eq!(reply["status"], 404, "{reply}");
    assert_eq!(reply["body"]["error"]["type"], "not_found_error", "{reply}");
    let reply = host
        .call(json!({"id": 6, "path": "/v1/chat/completions", "body": {"model": MODEL, "messages": "not a list"}}))
        .await;
    assert_eq!(reply["status"], 400, "{reply}");
    let reply = host.call(json!({"path": "/v1/models"})).await;
    assert_eq!(reply["body"]["error"]["code"], "missing_id", "{reply}");

    // Cancelling a stream: after the acknowledgement nothing more comes for it.
    let mut long = chat_body("Write a long story about a lighthouse keeper.", 2000, true);
    long["ignore_eos"] = json!(true);
    host.send(&json!({"id": "long", "path": "/v1/chat/completions", "body": long}))
        .await;
    let first = host.next().await;
    assert!(first["event"].is_object(), "{first}");
    host.send(&json!({"id": "long", "cancel": true})).await;
    host.send(&json!({"id": "after", "path": "/v1/models"}))
        .await;
    let mut acknowledged = false;
    loop {
        let reply = host.next().await;
        if reply["id"] == "after" {
            assert_eq!(reply["status"], 200);
            break;
        }
        assert_eq!(reply["id"], "long", "{reply}");
        assert!(
            !acknowledged,
            "a message for the cancelled request came after its acknowledgement: {reply}"
        );
        assert_ne!(
            reply["done"], true,
            "the 2000-token story finished before it was cancelled"
        );
        acknowledged = reply["cancelled"] == true;
    }
    assert!(acknowledged);

    let status = host.close().await;
    assert!(status.success(), "the host exited with {status}");
}

#[tokio::test]
async fn replies_over_a_mebibyte_come_in_pieces() {
    let data = tempfile::tempdir().unwrap();
    let minilm = crate::server::minilm_dir();
    let mut host = Host::start(
        data.path(),
        &[(
            "TABAGENT_MODELS__DIRECTORIES__MINILM",
            minilm.to_str().unwrap(),
        )],
    );
    let inputs: Vec<String> = (0..300)
        .map(|i| format!("sentence number {i} about tabagent"))
        .collect();
    host.send(&json!({"id": "big", "path": "/v1/embeddings", "body": {"model": "minilm", "input": inputs}}))
        .await;
    let mut pieces = 0;
    let mut text = String::new();
    loop {
        let (message, size) = host.next_raw().await;
        assert!(size <= 1024 * 1024, "{size} bytes");
        assert_eq!(message["id"], "big");
        pieces += 1;
        text.push_str(
            message["part"]
                .as_str()
                .expect("a long reply comes in pieces"),
        );
        if message["more"] == false {
            break;
        }
    }
    assert!(pieces >= 2, "{pieces} pieces");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["status"], 200);
    let data = reply["body"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 300);
    assert!(data
        .iter()
        .all(|item| item["embedding"].as_array().unwrap().len() == 384));
    let status = host.close().await;
    assert!(status.success(), "the host exited with {status}");
}

#[tokio::test]
async fn the_host_relays_to_a_running_server() {
    let server = Server::start(&[]);
    // The host's own data directory holds no model: what it lists comes from the server.
    let empty = tempfile::tempdir().unwrap();
    let mut host = Host::start(
        empty.path(),
        &[
            ("TABAGENT_NATIVE__CONNECT", "auto"),
            ("TABAGENT_NATIVE__SERVER_URL", &server.url),
        ],
    );
    let models = host.call(json!({"id": 1, "path": "/v1/models"})).await;
    assert!(
        crate::server::find(&models["body"]["data"], "id", MODEL).is_object(),
        "{models}"
    );
    let (text, events, _) = host
        .stream(json!({"id": 2, "path": "/v1/chat/completions", "body": chat_body("Say hello.", 12, true)}))
        .await;
    assert!(events > 1 && !text.is_empty());
    // The server counted the request.
    let metrics = server.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("/v1/chat/completions") && !l.starts_with('#')),
        "{metrics}"
    );
    let status = host.close().await;
    assert!(status.success(), "the host exited with {status}");

    // Told to relay to a server that is not there: every request gets a 502 saying so.
    let mut host = Host::start(
        empty.path(),
        &[
            ("TABAGENT_NATIVE__CONNECT", "server"),
            ("TABAGENT_NATIVE__SERVER_URL", "http://127.0.0.1:9"),
        ],
    );
    let reply = host.call(json!({"id": 1, "path": "/v1/models"})).await;
    assert_eq!(reply["status"], 502, "{reply}");
    assert_eq!(reply["body"]["error"]["code"], "server_unreachable");
    let status = host.close().await;
    assert!(status.success(), "the host exited with {status}");
}

#[tokio::test]
async fn serve_mode_all_shares_one_engine_between_http_and_native_messaging() {
    let data = data_dir_with_smollm2();
    let mut command = tabagent(data.path());
    command
        .args(["serve", "--mode", "all", "--port", "0", "--model", MODEL])
        .env("TABAGENT_MODELS__PRELOAD", "false");
    let mut child = tokio::process::Command::from(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // stdout carries only native messages, so the listening line is on stderr.
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr);
    let url = loop {
        let mut line = String::new();
        let n = tokio::time::timeout(
            PATIENCE,
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(n > 0, "serve --mode all exited before it listened");
        if let Some(url) = line.trim().strip_prefix("tabagent listening on ") {
            break url.to_string();
        }
    };
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = lines.read_to_end(&mut sink).await;
    });
    let mut host = Host {
        stdin: child.stdin.take(),
        stdout: child.stdout.take().unwrap(),
        child,
    };
    let reply = host
        .call(json!({"id": 1, "path": "/v1/chat/completions", "body": chat_body("Say hello.", 8, false)}))
        .await;
    assert_eq!(reply["status"], 200, "{reply}");
    // The model the native request loaded is the one HTTP sees loaded.
    let health: Value = reqwest::get(format!("{url}/v1/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded = crate::server::find(&health["models"], "name", MODEL);
    assert!(loaded.is_object(), "{health}");
    let (status, _) = {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat_body("Say hello.", 8, false))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 200);
    let health: Value = reqwest::get(format!("{url}/v1/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models = health["models"].as_array().unwrap();
    assert_eq!(
        models.iter().filter(|m| m["name"] == MODEL).count(),
        1,
        "{health}"
    );
    let _ = host.child.start_kill();
}

/// A temporary HOME, as a browser's user would have.
fn install_command(home: &Path, args: &[&str]) -> std::process::Output {
    let data = home.join("data");
    let mut command = tabagent(&data);
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .arg("native")
        .args(args);
    command.output().unwrap()
}

#[test]
fn install_writes_and_uninstall_removes_the_host_manifests() {
    let home = tempfile::tempdir().unwrap();
    let id = "abcdefghijklmnopabcdefghijklmnop";
    let out = install_command(home.path(), &["install", "--extension-id", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in [
        "google-chrome",
        "chromium",
        "microsoft-edge",
        "BraveSoftware/Brave-Browser",
    ] {
        let path = home
            .path()
            .join(".config")
            .join(dir)
            .join("NativeMessagingHosts/ai.tabagent.json");
        let manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            manifest["allowed_origins"],
            json!([format!("chrome-extension://{id}/")])
        );
        assert_eq!(manifest["type"], "stdio");
        let binary = PathBuf::from(manifest["path"].as_str().unwrap());
        assert!(binary.is_absolute() && binary.is_file(), "{binary:?}");
    }
    let out = install_command(home.path(), &["install", "--extension-id", "../../etc"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not an extension id"), "{stderr}");

    let out = install_command(home.path(), &["uninstall", "--browser", "chromium"]);
    assert!(out.status.success());
    assert!(!home
        .path()
        .join(".config/chromium/NativeMessagingHosts/ai.tabagent.json")
        .exists());
    assert!(home
        .path()
        .join(".config/google-chrome/NativeMessagingHosts/ai.tabagent.json")
        .exists());
}

/// The extension id Chromium gives an unpacked extension whose manifest has `key`: the SHA-256
/// of the public key, its first 32 hex digits written with the letters a to p.
fn extension_id(manifest: &Value) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(manifest["key"].as_str().unwrap())
        .unwrap();
    let digest = Sha256::digest(&key);
    digest
        .iter()
        .take(16)
        .flat_map(|byte| [byte >> 4, byte & 0xf])
        .map(|nibble| char::from(b'a' + nibble))
        .collect()
}

/// What the test extension asks.
const PROMPT: &str = "What is the capital of France?";

#[tokio::test]
async fn chromium_extension_streams_a_chat_over_native_messaging() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let data = home.join("data");
    import(&data, &smollm2_path(), MODEL);

    // The test extension, with a config.json saying where to report.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/native-extension");
    let extension = root.path().join("extension");
    std::fs::create_dir_all(&extension).unwrap();
    for file in ["manifest.json", "background.js"] {
        std::fs::copy(source.join(file), extension.join(file)).unwrap();
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(extension.join("manifest.json")).unwrap()).unwrap();
    let id = extension_id(&manifest);

    let out = install_command(
        &home,
        &["install", "--extension-id", &id, "--browser", "chromium"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (port, result_rx) = crate::browser::report_listener().await;
    let config = json!({
        "result_url": format!("http://127.0.0.1:{port}/report"),
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 24,
    });
    std::fs::write(extension.join("config.json"), config.to_string()).unwrap();

    // The host Chromium starts inherits this environment: tabagent's data, served in-process.
    let command = tabagent(&data);
    let mut browser = std::process::Command::new(crate::browser::chromium());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => browser.env(key, value),
            None => browser.env_remove(key),
        };
    }
    browser
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env("TABAGENT_NATIVE__CONNECT", "in-process")
        .env("TABAGENT_RESPONSE_CACHE__ENABLED", "false")
        .args(crate::browser::HEADLESS)
        .arg(format!(
            "--user-data-dir={}",
            home.join(".config/chromium").display()
        ))
        .arg(format!("--load-extension={}", extension.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut chromium = tokio::process::Command::from(browser)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let result = tokio::time::timeout(PATIENCE, result_rx).await;
    let _ = chromium.start_kill();
    let stderr = chromium
        .wait_with_output()
        .await
        .map(|out| out.stderr)
        .unwrap_or_default();
    let Ok(Ok(result)) = result else {
        panic!(
            "the extension reported nothing; Chromium said:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["done"], true, "{result}");
    assert!(
        crate::server::find(&result["models"]["data"], "id", MODEL).is_object(),
        "{result}"
    );
    let deltas = result["deltas"].as_array().unwrap();
    assert!(deltas.len() > 2, "{result}");
    let text: String = deltas.iter().filter_map(Value::as_str).collect();
    // Greedy decoding: the extension got, token by token, what the HTTP API answers.
    let server = Server::start(&[]);
    let (status, whole) = server
        .post_json("/v1/chat/completions", &chat_body(PROMPT, 24, false))
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        result["finish_reason"], whole["choices"][0]["finish_reason"],
        "{result}"
    );
    assert_eq!(result["errors"], json!([]), "{result}");
}
