//! Chat requests routed to remote engines: fake OpenAI engines on loopback (real HTTP, faults
//! injected) beside the real local engine.

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::server::{assert_error, chat, Server};

/// A server whose `[router]` is `router` (TOML).
pub fn server_with_router(router: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    std::fs::write(&config, router).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    (dir, server)
}

pub fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_model_is_routed_with_failover_while_local_models_are_served_here() {
    let down = FakeEngine::start(vec![Behaviour::Status(503)])
        .await
        .unwrap();
    let up = FakeEngine::start(vec![Behaviour::Answer(vec!["remote ", "hello"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
# The weight-2 provider is tried first: no sampling.
[router]
explore = false

[[router.providers]]
name = "down"
base_url = "{}"
models = ["big-model"]
weight = 2.0

[[router.providers]]
name = "up"
base_url = "{}"
models = ["big-model"]

[router.aliases]
big = "big-model"
"#,
        down.base_url, up.base_url
    ));
    let (status, reply) = server.post_json("/v1/chat/completions", &ask("big")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["message"]["content"], "remote hello");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (down.requests(), up.requests()),
        (1, 1),
        "the preferred one failed first"
    );
    assert_eq!(up.models(), vec!["big-model"], "the alias was resolved");

    let mut streamed = ask("up/big-model");
    streamed["stream"] = json!(true);
    let body = server.post_text("/v1/chat/completions", &streamed).await;
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "remote hello");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert_eq!(
        down.requests(),
        1,
        "a provider prefix goes to that provider only"
    );

    // A local model is still answered by the in-process engine.
    let (status, reply) = server
        .post_json("/v1/chat/completions", &chat("Say hi", 4))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(up.requests(), 2);

    let (status, body) = server
        .post_json("/v1/chat/completions", &ask("no-such-model"))
        .await;
    assert_eq!(assert_error(status, &body, 404)["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_that_answers_a_stream_with_one_json_body_is_read_not_failed() {
    // Regression: such an answer failed every request ("the stream ended before the answer
    // did") and opened the provider's circuit.
    let whole = FakeEngine::start(vec![Behaviour::Whole(vec!["whole ", "answer"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "whole"
base_url = "{}"
models = ["plain-json"]
"#,
        whole.base_url
    ));
    for _ in 0..4 {
        let (status, reply) = server
            .post_json("/v1/chat/completions", &ask("plain-json"))
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], "whole answer");
        assert_eq!(reply["usage"]["completion_tokens"], 2);
    }
    let mut streamed = ask("plain-json");
    streamed["stream"] = json!(true);
    let body = server.post_text("/v1/chat/completions", &streamed).await;
    assert!(body.contains("\"content\":\"whole answer\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(
        whole.bodies().iter().all(|b| b["stream"] == true),
        "it was asked to stream each time"
    );
    let (_, router) = server.get_json("/v1/router").await;
    let provider = crate::server::find(&router["providers"], "name", "whole");
    assert_eq!(provider["breaker"], "closed", "{router}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_no_provider_can_answer_the_caller_hears_why_or_when_to_come_back() {
    let broken = FakeEngine::start(vec![Behaviour::Status(500)])
        .await
        .unwrap();
    let busy = FakeEngine::start(vec![Behaviour::RateLimited(120)])
        .await
        .unwrap();
    let refusing = FakeEngine::start(vec![Behaviour::Status(400)])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "broken"
base_url = "{}"
models = ["m1"]

[[router.providers]]
name = "busy"
base_url = "{}"
models = ["m2"]

[[router.providers]]
name = "refusing"
base_url = "{}"
models = ["m3"]
"#,
        broken.base_url, busy.base_url, refusing.base_url
    ));
    let (status, body) = server.post_json("/v1/chat/completions", &ask("m1")).await;
    let error = assert_error(status, &body, 503);
    assert_eq!(error["code"], "upstream_unavailable");
    assert!(
        error["message"].as_str().unwrap().contains("broken"),
        "{body}"
    );

    let response = server.post("/v1/chat/completions", &ask("m2")).await;
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&wait), "{wait}");

    let (status, body) = server.post_json("/v1/chat/completions", &ask("m3")).await;
    let error = assert_error(status, &body, 400);
    assert!(
        error["message"].as_str().unwrap().contains("fake says 400"),
        "{body}"
    );
}

#[test]
fn a_router_configuration_that_cannot_work_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tabagent.toml");
    std::fs::write(
        &config,
        "[[router.providers]]\nname = \"x\"\nbase_url = \"ftp://nowhere\"\nmodels = [\"m\"]\n",
    )
    .unwrap();
    let output = crate::server::tabagent(dir.path())
        .args(["--config", config.to_str().unwrap(), "serve", "--port", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("base_url `ftp://nowhere` is not http(s)"),
        "{stderr}"
    );
}

/// Chaos: of three engines serving one model, one fails every other request and one is slow.
/// 2,000 requests from 40 concurrent clients: at least 99.9% succeed, and every success was
/// answered by exactly one engine (failover never sent an answered request again).
#[tokio::test(flavor = "multi_thread")]
async fn with_one_engine_failing_half_its_requests_and_one_slow_nearly_all_requests_succeed_once() {
    let flaky = FakeEngine::start(vec![Behaviour::Flaky(vec!["flaky"])])
        .await
        .unwrap();
    let slow = FakeEngine::start(vec![Behaviour::Slow(100, vec!["slow"])])
        .await
        .unwrap();
    let steady = FakeEngine::start(vec![Behaviour::Answer(vec!["steady"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "flaky"
base_url = "{}"
models = ["m"]
weight = 3.0

[[router.providers]]
name = "slow"
base_url = "{}"
models = ["m"]
weight = 2.0

[[router.providers]]
name = "steady"
base_url = "{}"
models = ["m"]
"#,
        flaky.base_url, slow.base_url, steady.base_url
    ));
    let server = std::sync::Arc::new(server);
    let (clients, each) = (40, 50);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let server = std::sync::Arc::clone(&server);
        workers.spawn(async move {
            let mut ok = 0;
            for _ in 0..each {
                let (status, reply) = server.post_json("/v1/chat/completions", &ask("m")).await;
                let content = reply["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or("");
                if status == 200 && ["flaky", "slow", "steady"].contains(&content) {
                    ok += 1;
                }
            }
            ok
        });
    }
    let mut succeeded = 0;
    while let Some(ok) = workers.join_next().await {
        succeeded += ok.unwrap();
    }
    let total = clients * each;
    assert!(
        succeeded * 1000 >= total * 999,
        "{succeeded} of {total} succeeded"
    );
    let answered = flaky.answered() + slow.answered() + steady.answered();
    eprintln!(
        "chaos: {succeeded} of {total} succeeded; answered by flaky {}, slow {}, steady {}; \
         flaky tries {}",
        flaky.answered(),
        slow.answered(),
        steady.answered(),
        flaky.requests()
    );
    assert_eq!(
        answered, succeeded,
        "an answered request was answered again"
    );
    assert!(
        flaky.requests() > flaky.answered(),
        "the flaky engine did fail some tries"
    );
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_generations_and_each_providers_health() {
    let down = FakeEngine::start(vec![Behaviour::Status(500)])
        .await
        .unwrap();
    let up = FakeEngine::start(vec![Behaviour::Answer(vec!["a", "b", "c"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
# The weight-2 provider is tried first: no sampling.
[router]
explore = false

[[router.providers]]
name = "down"
base_url = "{}"
models = ["m"]
weight = 2.0

[[router.providers]]
name = "up"
base_url = "{}"
models = ["m"]
"#,
        down.base_url, up.base_url
    ));
    assert_eq!(
        server.post_json("/v1/chat/completions", &ask("m")).await.0,
        200
    );
    let (status, local) = server
        .post_json("/v1/chat/completions", &chat("Hi", 4))
        .await;
    assert_eq!(status, 200, "{local}");
    let local_tokens = local["usage"]["completion_tokens"].as_f64().unwrap();
    assert_eq!(
        server
            .post_json("/v1/chat/completions", &ask("nope"))
            .await
            .0,
        404
    );

    let text = server.metrics_text().await;
    let model = crate::server::MODEL;
    let requests =
        r#"tabagent_http_requests_total{route="/v1/chat/completions",method="POST",status="#;
    assert_eq!(
        sample(&text, &format!("{requests}\"200\"}}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("{requests}\"404\"}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"tabagent_time_to_first_token_seconds_count{model="m",provider="up"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"tabagent_generated_tokens_total{model="m",provider="up"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"tabagent_generated_tokens_total{{model="{model}",provider="local"}}"#)
        ),
        Some(local_tokens),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"tabagent_provider_error_rate{provider="down"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"tabagent_provider_breaker_state{provider="down"}"#),
        Some(0.0),
        "one failure does not open the breaker: {text}"
    );
    assert!(text.contains("tabagent_model_queue_depth{model="), "{text}");
    let (status, router) = server.get_json("/v1/router").await;
    assert_eq!(status, 200);
    assert_eq!(router["providers"][1]["name"], "down");
    assert_eq!(router["providers"][1]["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_moves_the_answering_providers_posterior_and_is_saved() {
    let up = FakeEngine::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        "[[router.providers]]\nname = \"up\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
        up.base_url
    ));
    let (status, reply) = server.post_json("/v1/chat/completions", &ask("m")).await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["id"].as_str().unwrap().to_string();

    let (status, arm) = server
        .post_json("/v1/feedback", &json!({"id": id, "score": 0.0}))
        .await;
    assert_eq!(status, 200, "{arm}");
    // One answer within the TTFT target (reward 1), then a score of 0.
    assert_eq!(
        (arm["alpha"].as_f64(), arm["beta"].as_f64()),
        (Some(2.0), Some(2.0)),
        "{arm}"
    );
    assert_eq!(arm["pulls"], 2);
    let saved = std::fs::read_to_string(server.data_dir().join("router-analytics.json")).unwrap();
    assert!(saved.contains("\"up\""), "{saved}");

    let (status, body) = server
        .post_json(
            "/v1/feedback",
            &json!({"id": "chatcmpl-nope", "score": 1.0}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 404)["code"], "answer_not_found");
    let (status, body) = server
        .post_json("/v1/feedback", &json!({"id": id, "score": 2.0}))
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "score");

    let (status, analytics) = server.get_json("/v1/analytics").await;
    assert_eq!(status, 200);
    let arm = &analytics["arms"][0];
    assert_eq!(
        (arm["provider"].as_str(), arm["model"].as_str()),
        (Some("up"), Some("m"))
    );
    assert_eq!(arm["mean"], 0.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_find_a_dead_provider_without_a_request_and_traces_cross_the_hop() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let live = FakeEngine::start(vec![Behaviour::Answer(vec!["live"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[router]
probe_interval_secs = 0.05
breaker_failures = 1

[[router.providers]]
name = "dead"
base_url = "http://127.0.0.1:{port}/v1"
models = ["m"]

[[router.providers]]
name = "live"
base_url = "{}"
models = ["m"]
"#,
        live.base_url
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, router) = server.get_json("/v1/router").await;
        let dead = crate::server::find(&router["providers"], "name", "dead");
        let live = crate::server::find(&router["providers"], "name", "live");
        assert_eq!(live["breaker"], "closed", "{router}");
        if dead["breaker"] == "open" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never opened: {router}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(live.requests(), 0, "no request was needed to find it");

    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("traceparent", caller)
        .json(&ask("m"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = server.post_json("/v1/chat/completions", &ask("m")).await;
    assert_eq!(status, 200);
    let sent = live.traceparents();
    assert_eq!(sent.len(), 2);
    let first = sent[0].as_deref().expect("a traceparent");
    assert!(
        first.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && first != caller,
        "the caller's trace, a span of its own: {first}"
    );
    let second = sent[1].as_deref().expect("a traceparent");
    let trace = tabagent_router::TraceParent::parse(second).expect("a valid traceparent");
    assert_ne!(
        trace.trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "a new trace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_learns_its_parameter_set_from_feedback_and_optimize_names_it() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[router]
explore = false

[[router.providers]]
name = "engine"
base_url = "{}"
models = ["m"]

[[router.routes.code.parameter_sets]]
name = "creative"
temperature = 1.1

[[router.routes.code.parameter_sets]]
name = "precise"
temperature = 0.1
top_p = 0.5
"#,
        engine.base_url
    ));
    let (status, body) = server.get_json("/v1/analytics/optimize?task=code").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["parameter_set"], "creative",
        "nothing learnt: the first"
    );
    assert_eq!(body["pulls"], 0);

    let (status, reply) = server.post_json("/v1/chat/completions", &ask("code")).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        engine.bodies()[0]["temperature"]
            .as_f64()
            .map(|t| (t * 10.0).round()),
        Some(11.0)
    );
    for _ in 0..2 {
        let (status, _) = server
            .post_json("/v1/feedback", &json!({"id": reply["id"], "score": 0.0}))
            .await;
        assert_eq!(status, 200);
    }
    let (_, reply) = server.post_json("/v1/chat/completions", &ask("code")).await;
    assert_eq!(engine.bodies()[1]["top_p"].as_f64(), Some(0.5), "{reply}");
    let (status, _) = server
        .post_json("/v1/feedback", &json!({"id": reply["id"], "score": 1.0}))
        .await;
    assert_eq!(status, 200);

    let (_, body) = server.get_json("/v1/analytics/optimize?task=code").await;
    assert_eq!(
        (
            body["parameter_set"].clone(),
            body["provider"].clone(),
            body["parameters"]["top_p"].clone()
        ),
        (json!("precise"), json!("engine"), json!(0.5))
    );
    let (_, analytics) = server.get_json("/v1/analytics").await;
    let sets: Vec<&str> = analytics["arms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["parameter_set"].as_str())
        .collect();
    assert_eq!(sets, vec!["precise", "creative"], "{analytics}");

    let (status, body) = server.get_json("/v1/analytics/optimize?task=chat").await;
    assert_eq!(assert_error(status, &body, 404)["code"], "task_not_found");
    let (status, body) = server.get_json("/v1/analytics/optimize").await;
    assert_eq!(assert_error(status, &body, 400)["param"], "task");
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_completions_are_routed_with_failover_too() {
    let down = FakeEngine::start(vec![Behaviour::Status(502)])
        .await
        .unwrap();
    let up = FakeEngine::start(vec![Behaviour::Answer(vec!["once ", "upon"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[router]
explore = false

[[router.providers]]
name = "down"
base_url = "{}"
models = ["base"]
weight = 2.0

[[router.providers]]
name = "up"
base_url = "{}"
models = ["base"]
"#,
        down.base_url, up.base_url
    ));
    let ask = json!({"model": "base", "prompt": "Tell me a story:", "max_tokens": 5});
    let (status, reply) = server.post_json("/v1/completions", &ask).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "text_completion");
    assert_eq!(reply["choices"][0]["text"], "once upon");
    assert_eq!((down.requests(), up.requests()), (1, 1));
    let sent = &up.bodies()[0];
    assert_eq!(sent["prompt"], "Tell me a story:");
    assert!(sent.get("messages").is_none(), "{sent}");
    assert_eq!(sent["max_tokens"], 5);

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let body = server
        .post("/v1/completions", &streamed)
        .await
        .text()
        .await
        .unwrap();
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "once upon");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // The local model still completes here.
    let local = json!({"model": crate::server::MODEL, "prompt": "One, two,", "max_tokens": 3});
    let (status, reply) = server.post_json("/v1/completions", &local).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(up.requests(), 2);
}
