//! Headless Chromium, driven over the DevTools protocol on a pipe: with
//! `--remote-debugging-pipe` the browser reads commands on its fd 3 and writes replies and
//! events on its fd 4, each a JSON message ending in a NUL byte (a shell maps our pipes to its
//! stdin and stdout onto those). Tests open pages and evaluate scripts in them as a user's
//! actions would, so the pages ship no hooks of their own.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one page may take to do what it was asked.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// The Chromium `scripts/test` installed.
pub fn chromium() -> PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_CHROMIUM") else {
        panic!("TABAGENT_TEST_CHROMIUM is not set: run the tests with scripts/test, which installs Chromium");
    };
    PathBuf::from(path)
}

/// How every test starts Chromium: headless, as root, on a fresh profile, without its own
/// background traffic (this machine's network is closed: it would only fail, many
/// connections at a time).
pub const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A running headless Chromium (with a fake camera), killed on drop.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    profile: tempfile::TempDir,
}

/// A page (a tab) the browser opened, by its DevTools session.
pub struct Page {
    session: String,
}

impl Browser {
    pub fn launch(extra_args: &[String]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        // The shell puts our pipes where Chromium's DevTools pipe is (fds 3 and 4), then
        // becomes Chromium.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(chromium())
            .args(HEADLESS)
            .args([
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra_args)
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().unwrap();
        let commands = child.stdin.take().unwrap();
        let replies = child.stdout.take().unwrap();
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for message in BufReader::new(replies).split(0) {
                let Ok(message) = message else { break };
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            commands,
            messages,
            next_id: 0,
            profile,
        }
    }

    /// What Chromium wrote to its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends `method` (to `session`'s page, or the browser) and waits for its result; events
    /// that arrive meanwhile go to `events`.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        events: &mut Vec<Value>,
    ) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&command).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.messages.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "Chromium did not answer `{method}` in time; it said:\n{}",
                    self.log()
                )
            });
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("`{method}` failed: {error}");
                }
                return message["result"].clone();
            }
            events.push(message);
        }
    }

    /// Opens `url` in a new tab and waits until it has loaded.
    pub fn open(&mut self, url: &str) -> Page {
        let mut events = Vec::new();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank"}),
            &mut events,
        );
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
            &mut events,
        );
        let session = attached["sessionId"].as_str().unwrap().to_string();
        self.call(Some(&session), "Page.enable", json!({}), &mut events);
        let mut events = Vec::new();
        self.call(
            Some(&session),
            "Page.navigate",
            json!({"url": url}),
            &mut events,
        );
        let loaded = |event: &Value| {
            event["method"] == "Page.loadEventFired" && event["sessionId"] == session.as_str()
        };
        if !events.iter().any(loaded) {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let event = self.messages.recv_timeout(left).unwrap_or_else(|_| {
                    panic!("{url} did not load in time; Chromium said:\n{}", self.log())
                });
                if loaded(&event) {
                    break;
                }
            }
        }
        Page { session }
    }

    /// Evaluates `expression` in `page`, waits for the promise it gives, and returns its
    /// value; a thrown error fails the test.
    pub fn evaluate(&mut self, page: &Page, expression: &str) -> Value {
        let mut events = Vec::new();
        let result = self.call(
            Some(&page.session),
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            &mut events,
        );
        if let Some(thrown) = result.get("exceptionDetails") {
            panic!("the page threw: {thrown}");
        }
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver of the `/webrtc` page (tests/browser/webrtc_driver.js), run with `options`.
pub fn drive_webrtc_page(server_url: &str, options: &Value, extra_args: &[String]) -> Value {
    const DRIVER: &str = include_str!("../../../../tests/browser/webrtc_driver.js");
    let mut browser = Browser::launch(extra_args);
    let page = browser.open(&format!("{server_url}/webrtc"));
    browser.evaluate(&page, &format!("({DRIVER})({options})"))
}

/// A loopback listener that takes one POST to `/report`: its port, and the body when it comes
/// (for pages and extensions of the tests' own that report what they did).
pub async fn report_listener() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    let (report_tx, report_rx) = tokio::sync::oneshot::channel::<String>();
    let report_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(report_tx)));
    let app = axum::Router::new().route(
        "/report",
        axum::routing::post(move |body: String| {
            let report_tx = report_tx.clone();
            async move {
                if let Some(tx) = report_tx.lock().unwrap().take() {
                    let _ = tx.send(body);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, report_rx)
}
