//! The response cache: deterministic requests answered again without generating, shared by two
//! servers through a real Redis (Debian's redis-server, started here), and answered on while
//! Redis is killed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::server::Server;

/// The test servers run without the cache unless told otherwise.
const CACHE_ON: &[(&str, &str)] = &[("TABAGENT_RESPONSE_CACHE__ENABLED", "true")];

/// A redis-server of our own on a free loopback port.
pub struct Redis {
    child: Child,
    pub url: String,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// A fresh (empty) Redis on `port`, e.g. again where one was killed.
    pub fn start_on(port: u16) -> Redis {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs Debian's redis-server)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("redis-server exited before it was ready")
                .unwrap();
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .unwrap()
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(engine: &FakeEngine, redis: &Redis) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tabagent.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[router.providers]]
name = "up"
base_url = "{}"
models = ["m"]

[response_cache]
redis_url = "{}"
"#,
            engine.base_url, redis.url
        ),
    )
    .unwrap();
    (dir, path)
}

fn ask(content: &str, temperature: f64) -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": content}],
           "max_tokens": 8, "temperature": temperature})
}

/// Status, the cache header and the answer's text.
async fn send(server: &Server, body: &Value) -> (u16, Option<String>, String) {
    let response = server.post("/v1/chat/completions", body).await;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-tabagent-cache")
        .map(|v| v.to_str().unwrap().to_string());
    let reply: Value = response.json().await.unwrap();
    let text = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, cache, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn deterministic_answers_come_from_the_cache_shared_by_servers_through_redis() {
    let redis = Redis::start();
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["cached ", "answer"])])
        .await
        .unwrap();
    let (_dir, path) = config(&engine, &redis);
    let config = ["--config", path.to_str().unwrap()];
    let first = Server::start_with(&config, CACHE_ON, |_| {});
    let second = Server::start_with(&config, CACHE_ON, |_| {});
    let question = ask("what is cached?", 0.0);

    let miss = send(&first, &question).await;
    assert_eq!(miss, (200, Some("miss".into()), "cached answer".into()));
    let hit = send(&first, &question).await;
    assert_eq!(hit, (200, Some("hit".into()), "cached answer".into()));
    // Another server has never seen the question: Redis has the answer.
    let shared = send(&second, &question).await;
    assert_eq!(shared, (200, Some("hit".into()), "cached answer".into()));
    assert_eq!(engine.requests(), 1);

    let mut streamed = question.clone();
    streamed["stream"] = json!(true);
    let response = second.post("/v1/chat/completions", &streamed).await;
    assert_eq!(response.headers()["x-tabagent-cache"], "hit");
    let body = response.text().await.unwrap();
    assert!(
        body.contains("cached answer") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );

    // Not deterministic: never cached.
    let (status, cache, _) = send(&first, &ask("what is cached?", 0.7)).await;
    assert_eq!((status, cache), (200, None));
    assert_eq!(engine.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_keep_succeeding_when_redis_is_killed() {
    let mut redis = Redis::start();
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["fine"])])
        .await
        .unwrap();
    let (_dir, path) = config(&engine, &redis);
    let server = Server::start_with(&["--config", path.to_str().unwrap()], CACHE_ON, |_| {});
    for i in 0..10 {
        let (status, cache, text) = send(&server, &ask(&format!("question {i}"), 0.0)).await;
        assert_eq!(
            (status, cache, text.as_str()),
            (200, Some("miss".into()), "fine")
        );
    }
    redis.kill();
    // Asked again, the same ten come from the server's own memory; ten new ones are generated.
    for i in 0..20 {
        let (status, cache, text) = send(&server, &ask(&format!("question {i}"), 0.0)).await;
        let expected = if i < 10 { "hit" } else { "miss" };
        assert_eq!(
            (status, cache.as_deref(), text.as_str()),
            (200, Some(expected), "fine"),
            "{i}"
        );
    }
    assert_eq!(engine.requests(), 20);
    let metrics = server.metrics_text().await;
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tabagent_response_cache_redis_errors "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(errors.is_some_and(|e| e >= 1.0), "{metrics}");
    assert!(
        metrics.contains(r#"tabagent_response_cache_lookups_total{result="hit"} 10"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_meaning_the_same_gets_the_cached_answer_when_the_semantic_cache_is_on() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["Paris"])])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tabagent.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[router.providers]]
name = "up"
base_url = "{}"
models = ["m"]
capabilities = {{ tools = true }}

[response_cache]
semantic = true
semantic_threshold = 0.9
semantic_model = "minilm"
"#,
            engine.base_url
        ),
    )
    .unwrap();
    let minilm = crate::server::minilm_dir();
    let server = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[
            CACHE_ON[0],
            (
                "TABAGENT_MODELS__DIRECTORIES__MINILM",
                minilm.to_str().unwrap(),
            ),
        ],
        |_| {},
    );
    let first = send(&server, &ask("What is the capital of France?", 0.0)).await;
    assert_eq!(first, (200, Some("miss".into()), "Paris".into()));
    let again = send(&server, &ask("what's the capital city of France?", 0.0)).await;
    assert_eq!(again, (200, Some("semantic-hit".into()), "Paris".into()));
    assert_eq!(engine.requests(), 1, "answered from the cache");

    let other = send(&server, &ask("How tall is Mount Everest?", 0.0)).await;
    assert_eq!(other.1.as_deref(), Some("miss"));
    // The same question after other earlier messages is another scope.
    let mut with_history = ask("What is the capital of France?", 0.0);
    with_history["messages"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"role": "system", "content": "Answer in German."}));
    assert_eq!(
        send(&server, &with_history).await.1.as_deref(),
        Some("miss")
    );
    // Sampled requests are never cached.
    assert_eq!(
        send(&server, &ask("What is the capital of France?", 0.7))
            .await
            .1,
        None
    );
    assert_eq!(engine.requests(), 4);
    // A request with tools is never answered from the cache, the semantic one included.
    let mut with_tools = ask("What is the capital of France?", 0.0);
    with_tools["tools"] = json!([{"type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    assert_eq!(
        send(&server, &with_tools).await,
        (200, None, "Paris".into())
    );
    assert_eq!(engine.requests(), 5);
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"tabagent_response_cache_lookups_total{result="semantic_hit"} 1"#),
        "{metrics}"
    );
}
