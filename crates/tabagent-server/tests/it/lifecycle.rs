//! Several models within a memory budget: least-recently-used idle models make room, a model in
//! use is never unloaded, concurrent first requests load once, explicit load and unload.

use serde_json::{json, Value};

use crate::server::{assert_error, chat, find, Server, MODEL};
use crate::streaming::generating;

const GEMMA: &str = "gemma-base";

fn gemma_path() -> std::path::PathBuf {
    let Some(path) = std::env::var_os("TABAGENT_TEST_GEMMA_GGUF") else {
        panic!("TABAGENT_TEST_GEMMA_GGUF is not set: run the tests with scripts/test, which fetches the model");
    };
    path.into()
}

/// SmolLM2 (~240 MiB with this context) and Gemma 270M (~390 MiB): the budget holds either, not
/// both. Returns once the default model (SmolLM2) is loaded.
async fn server_with_room_for_one() -> Server {
    let server = Server::start_with(
        &["--parallel", "1", "--ctx-size", "512"],
        &[("TABAGENT_MODELS__MEMORY_BUDGET_MIB", "450")],
        |dir| crate::server::import(dir, &gemma_path(), GEMMA),
    );
    // Waits for the preload in progress rather than starting another.
    let (status, body) = server
        .post_json(&format!("/v1/models/{MODEL}/load"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    server
}

fn completion(model: &str) -> Value {
    json!({"model": model, "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0})
}

async fn state_of(server: &Server, id: &str) -> (String, Option<u64>) {
    let (status, body) = server.get_json(&format!("/v1/models/{id}")).await;
    assert_eq!(status, 200, "{body}");
    (
        body["state"].as_str().unwrap().to_string(),
        body["memory_bytes"].as_u64(),
    )
}

#[tokio::test]
async fn alternating_models_evict_and_reload_within_the_budget() {
    let server = server_with_room_for_one().await;
    assert_eq!(state_of(&server, MODEL).await.0, "loaded");
    assert_eq!(
        state_of(&server, GEMMA).await,
        ("on_disk".to_string(), None)
    );

    let (status, body) = server
        .post_json("/v1/completions", &completion(GEMMA))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of(&server, GEMMA).await.0, "loaded");
    assert_eq!(
        state_of(&server, MODEL).await,
        ("on_disk".to_string(), None)
    );

    let (status, body) = server
        .post_json("/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200, "{body}");
    let (state, memory) = state_of(&server, MODEL).await;
    assert_eq!(state, "loaded");
    assert!(memory.unwrap() < 450 << 20, "{memory:?}");
    assert_eq!(state_of(&server, GEMMA).await.0, "on_disk");
}

#[tokio::test]
async fn a_model_in_use_is_not_evicted() {
    let server = server_with_room_for_one().await;
    let running = generating(&server, "Tell a story.").await;

    let (status, body) = server
        .post_json("/v1/completions", &completion(GEMMA))
        .await;
    let error = assert_error(status, &body, 503);
    assert_eq!(error["code"], "model_over_budget", "{body}");
    assert!(error["message"].as_str().unwrap().contains(MODEL), "{body}");
    assert_eq!(state_of(&server, MODEL).await.0, "loaded");

    drop(running);
    // One sequence: this request runs only once the cancelled one has left it, and when its
    // answer is back SmolLM2 is idle.
    let (status, body) = server
        .post_json("/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json("/v1/completions", &completion(GEMMA))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of(&server, MODEL).await.0, "on_disk");
}

#[tokio::test]
async fn concurrent_first_requests_load_a_model_once() {
    let server = server_with_room_for_one().await;
    let request = completion(GEMMA);
    let (first, second) = tokio::join!(
        server.post_json("/v1/completions", &request),
        server.post_json("/v1/completions", &request)
    );
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(second.0, 200, "{}", second.1);
    // Both ran on the one engine the registry holds.
    let (_, health) = server.get_json("/v1/health").await;
    let gemma = find(&health["models"], "name", GEMMA);
    assert_eq!(gemma["completed_total"], 2, "{health}");
}

#[tokio::test]
async fn models_load_and_unload_on_request() {
    let server = server_with_room_for_one().await;
    let (status, body) = server
        .post_json(&format!("/v1/models/{GEMMA}/load"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "loaded", "{body}");
    assert!(body["memory_bytes"].as_u64().unwrap() > 200 << 20, "{body}");
    assert_eq!(state_of(&server, MODEL).await.0, "on_disk");

    let (status, body) = server
        .post_json(&format!("/v1/models/{GEMMA}/unload"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unloaded"], true, "{body}");
    assert_eq!(state_of(&server, GEMMA).await.0, "on_disk");

    let (status, body) = server
        .post_json("/v1/models/no-such-model/unload", &json!({}))
        .await;
    assert_error(status, &body, 404);
    let (status, body) = server.post_json("/v1/models/x/explode", &json!({})).await;
    assert_error(status, &body, 404);
}

#[tokio::test]
async fn a_busy_model_cannot_be_unloaded_or_deleted() {
    let server = server_with_room_for_one().await;
    let _running = generating(&server, "Tell a story.").await;
    let (status, body) = server
        .post_json(&format!("/v1/models/{MODEL}/unload"), &json!({}))
        .await;
    let error = assert_error(status, &body, 409);
    assert_eq!(error["code"], "model_busy", "{body}");
    let response = server
        .client
        .delete(server.endpoint(&format!("/v1/models/{MODEL}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
}

#[tokio::test]
async fn keep_alive_is_set_per_model_by_loads_and_requests() {
    let server = server_with_room_for_one().await;
    let (_, body) = server.get_json(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(
        body["keep_alive_secs"], -1,
        "the default model stays: {body}"
    );

    let (status, body) = server
        .post_json(
            &format!("/v1/models/{GEMMA}/load"),
            &json!({"keep_alive": "10m"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keep_alive_secs"], 600, "{body}");
    let (_, body) = server.get_json(&format!("/v1/models/{GEMMA}")).await;
    assert_eq!(body["keep_alive_secs"], 600, "{body}");

    let mut request = completion(GEMMA);
    request["keep_alive"] = json!("soon");
    let (status, body) = server.post_json("/v1/completions", &request).await;
    let error = assert_error(status, &body, 400);
    assert_eq!(error["param"], "keep_alive", "{body}");
    assert_eq!(state_of(&server, GEMMA).await.0, "loaded");

    // Zero: unloaded once the request that set it has ended.
    request["keep_alive"] = json!(0);
    let (status, body) = server.post_json("/v1/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while state_of(&server, GEMMA).await.0 != "on_disk" {
        assert!(
            std::time::Instant::now() < deadline,
            "keep_alive 0 did not unload the model"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, body) = server.get_json(&format!("/v1/models/{GEMMA}")).await;
    assert_eq!(body["keep_alive_secs"], Value::Null, "{body}");
}
