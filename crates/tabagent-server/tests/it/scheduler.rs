//! The scheduler through the server: concurrency limits with interactive requests served before
//! batch ones, cancellation reaching the engine, per-key rate limits and token budgets, and
//! per-request deadlines.

use std::time::Duration;

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::routing::{ask, sample, server_with_router};
use crate::server::{assert_error, chat, Server};

/// Waits (polling) until `check` holds; fails after 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A gate's gauge from `/metrics`.
async fn gate(server: &Server, gauge: &str, gate: &str) -> Option<f64> {
    let text = server.metrics_text().await;
    sample(
        &text,
        &format!("tabagent_scheduler_{gauge}{{gate=\"{gate}\"}}"),
    )
}

fn streamed(model: &str) -> Value {
    let mut body = ask(model);
    body["stream"] = json!(true);
    body
}

/// Reads a streamed response until `text` has arrived.
async fn read_until(response: &mut reqwest::Response, text: &str) {
    let mut seen = String::new();
    while !seen.contains(text) {
        let chunk = response.chunk().await.unwrap().expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_provider_serves_waiting_interactive_requests_before_batch_ones() {
    let engine = FakeEngine::start(vec![
        Behaviour::Held(vec!["first"]),
        Behaviour::Answer(vec!["second"]),
        Behaviour::Answer(vec!["third"]),
        Behaviour::Held(vec!["fourth"]),
    ])
    .await
    .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "one"
base_url = "{}"
models = ["running", "batch", "interactive"]
max_concurrency = 1
"#,
        engine.base_url
    ));
    let server = std::sync::Arc::new(server);
    let mut running = server
        .post("/v1/chat/completions", &streamed("running"))
        .await;
    read_until(&mut running, "first").await;

    let send = |model: &'static str, priority: &'static str| {
        let server = std::sync::Arc::clone(&server);
        tokio::spawn(async move {
            let response = server
                .client
                .post(server.endpoint("/v1/chat/completions"))
                .header("x-tabagent-priority", priority)
                .json(&ask(model))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    // The batch request queues first.
    let batch = send("batch", "batch");
    until("the batch request waits", || async {
        gate(&server, "waiting", "provider one").await == Some(1.0)
    })
    .await;
    let interactive = send("interactive", "interactive");
    until("both wait", || async {
        gate(&server, "waiting", "provider one").await == Some(2.0)
    })
    .await;
    assert_eq!(engine.requests(), 1, "nothing passed the full gate");

    engine.release();
    read_until(&mut running, "[DONE]").await;
    drop(running);
    let (status, reply) = interactive.await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["message"]["content"], "second");
    let (status, reply) = batch.await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["message"]["content"], "third");
    assert_eq!(engine.models(), vec!["running", "interactive", "batch"]);

    // A client that goes away mid-stream cancels the upstream request and frees its slot.
    let mut leaving = server
        .post("/v1/chat/completions", &streamed("running"))
        .await;
    read_until(&mut leaving, "fourth").await;
    assert_eq!(engine.open_streams(), 1);
    drop(leaving);
    until("the engine sees the client leave", || async {
        engine.cancelled() == 1
    })
    .await;
    until("the slot is free", || async {
        gate(&server, "running", "provider one").await == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_its_own_rate_limit_and_token_budget() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    let shared = "shared-key-0123456789";
    let nightly = "nightly-key-0123456789";
    std::fs::write(
        &config,
        format!(
            r#"
[server]
api_keys = ["{shared}"]

[scheduler.limits]
requests_per_minute = 2

# Each answer costs 4 tokens (3 prompt, 1 generated).
[scheduler.keys.nightly]
key_env = "NIGHTLY_KEY"
tokens_per_day = 5
priority = "batch"

[[router.providers]]
name = "engine"
base_url = "{}"
models = ["m"]
"#,
            engine.base_url
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[("NIGHTLY_KEY", nightly)],
        |_| {},
    );
    let send = |key: Option<&'static str>, headers: &'static [(&'static str, &'static str)]| {
        let mut request = server
            .client
            .post(server.endpoint("/v1/chat/completions"))
            .json(&ask("m"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(send(None, &[]).await.0, 401);
    for _ in 0..2 {
        let (status, _, body) = send(Some(shared), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = send(Some(shared), &[]).await;
    let error = assert_error(status, &body, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("requests per minute"));
    assert!(
        retry_after.is_some_and(|s| (1..=30).contains(&s)),
        "{retry_after:?}"
    );

    // The named key is not limited by requests but by tokens: 5 a day, charged after each answer.
    for _ in 0..2 {
        let (status, _, body) = send(Some(nightly), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = send(Some(nightly), &[]).await;
    let error = assert_error(status, &body, 429);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens per day"),
        "{body}"
    );
    assert!(retry_after.is_some_and(|s| s > 3600), "{retry_after:?}");
    assert_eq!(
        engine.requests(),
        4,
        "refused requests never reached the engine"
    );

    // Malformed scheduling headers are the caller's mistake.
    let (status, _, body) = send(Some(shared), &[("x-tabagent-priority", "urgent")]).await;
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "x-tabagent-priority"
    );
}

#[test]
fn a_named_key_whose_variable_is_unset_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    std::fs::write(
        &config,
        "[scheduler.keys.ci]\nkey_env = \"TABAGENT_TEST_UNSET_KEY\"\n",
    )
    .unwrap();
    let output = crate::server::tabagent(dir.path())
        .args(["--config", config.to_str().unwrap(), "serve", "--port", "0"])
        .env_remove("TABAGENT_TEST_UNSET_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TABAGENT_TEST_UNSET_KEY (its key) is not set"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_its_deadline_is_cancelled_and_does_not_count_against_the_provider() {
    let engine = FakeEngine::start(vec![Behaviour::Stall]).await.unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "stalling"
base_url = "{}"
models = ["m"]
"#,
        engine.base_url
    ));
    let send = |body: Value, timeout: &'static str| {
        server
            .client
            .post(server.endpoint("/v1/chat/completions"))
            .header("x-tabagent-timeout", timeout)
            .json(&body)
            .send()
    };
    let response = send(ask("m"), "0.2").await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 504)["code"],
        "deadline_exceeded"
    );
    let (_, router) = server.get_json("/v1/router").await;
    let stalling = crate::server::find(&router["providers"], "name", "stalling");
    assert_eq!(stalling["breaker"], "closed", "{router}");
    assert!(stalling["error_rate"].is_null(), "{router}");

    // The local engine too: a long generation is stopped at the deadline.
    let mut long = chat("Count from one to a thousand.", 2000);
    long["ignore_eos"] = json!(true);
    let response = send(long, "0.2").await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 504)["code"],
        "deadline_exceeded"
    );
    until("the local engine stops generating", || async {
        server.model_health().await["active"] == 0
    })
    .await;

    let response = send(ask("m"), "0").await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "x-tabagent-timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_model_with_a_concurrency_limit_serves_interactive_requests_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    std::fs::write(&config, "[scheduler]\nlocal_concurrency = 1\n").unwrap();
    let server = std::sync::Arc::new(Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--parallel",
        "2",
        "--ctx-size",
        "2048",
    ]));
    let local_gate = format!("local model {}", crate::server::MODEL);
    let endless = || crate::streaming::endless("Tell a long story.");
    let mut running = server.post("/v1/chat/completions", &endless()).await;
    read_until(&mut running, "content").await;
    let send = |priority: &'static str| {
        let server = std::sync::Arc::clone(&server);
        let body = endless();
        tokio::spawn(async move {
            server
                .client
                .post(server.endpoint("/v1/chat/completions"))
                .header("x-tabagent-priority", priority)
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    let batch = send("batch");
    until("the batch request waits", || async {
        gate(&server, "waiting", &local_gate).await == Some(1.0)
    })
    .await;
    let interactive = send("interactive");
    until("both wait", || async {
        gate(&server, "waiting", &local_gate).await == Some(2.0)
    })
    .await;
    // The engine has a second slot, but the limit is one.
    assert_eq!(server.model_health().await["active"], 1);
    drop(running);
    // Its response starts only once it holds the slot; the batch request still waits.
    let mut interactive = interactive.await.unwrap();
    read_until(&mut interactive, "content").await;
    assert_eq!(gate(&server, "waiting", &local_gate).await, Some(1.0));
    assert!(!batch.is_finished());
    drop(interactive);
    let mut batch = batch.await.unwrap();
    read_until(&mut batch, "content").await;
    assert_eq!(gate(&server, "waiting", &local_gate).await, Some(0.0));

    // Only a model that exists gets a gate: made-up names are 404s, not new gates (and not
    // new metric series).
    let mut unknown = endless();
    unknown["model"] = serde_json::json!("no-such-model-7");
    let response = server.post("/v1/chat/completions", &unknown).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        gate(&server, "running", "local model no-such-model-7").await,
        None
    );
}

/// Reads a streamed chat response until its first generated text (not the opening role chunk,
/// which a queued request gets at once).
async fn read_until_text(response: &mut reqwest::Response) {
    let mut seen = String::new();
    loop {
        let chunk = response.chunk().await.unwrap().expect("the stream ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let generated = seen.match_indices("\"content\":\"").any(|(at, m)| {
            seen[at + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c != '"')
        });
        if generated {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_engine_serves_waiting_interactive_requests_before_batch_ones() {
    let server = std::sync::Arc::new(Server::start(&["--parallel", "1", "--ctx-size", "2048"]));
    let stream = |priority: &'static str, max_tokens: u32| {
        let mut body = crate::streaming::endless("Tell a long story.");
        body["max_tokens"] = json!(max_tokens);
        server
            .client
            .post(server.endpoint("/v1/chat/completions"))
            .header("x-tabagent-priority", priority)
            .json(&body)
            .send()
    };
    let mut running = stream("interactive", 100_000).await.unwrap();
    read_until_text(&mut running).await;
    // Queued requests get their headers at once; the batch one is first in time.
    let mut batch = stream("batch", 20).await.unwrap();
    let mut interactive = stream("interactive", 100_000).await.unwrap();
    until("both wait in the engine", || async {
        server.model_health().await["queued"] == 2
    })
    .await;
    drop(running);
    read_until_text(&mut interactive).await;
    assert_eq!(
        server.model_health().await["queued"],
        1,
        "the batch request still waits"
    );
    drop(interactive);
    read_until(&mut batch, "[DONE]").await;
}
