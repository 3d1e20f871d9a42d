use serde_json::{json, Value};

use crate::server::{assert_error, chat, Server, MODEL};

async fn post_raw(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.endpoint(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn each_bad_request_gets_a_clear_4xx() {
    let server = Server::start(&["--ctx-size", "256"]);
    let (status, body) = post_raw(&server, "/v1/chat/completions", "{\"model\": ").await;
    assert_error(status, &body, 400);

    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        r#"{"model": "smollm2", "messages": "hi"}"#,
    )
    .await;
    let error = assert_error(status, &body, 400);
    assert!(
        error["message"].as_str().unwrap().contains("messages"),
        "{body}"
    );

    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": MODEL, "messages": []}), "messages"),
        (
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}),
            "role",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 9}),
            "temperature",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": 0}),
            "top_p",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 3}),
            "n",
        ),
        (
            json!({"model": "", "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "no spaces", "parameters": {}}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                   "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "not among `tools`",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f", "strict": true,
                       "parameters": {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}}}],
                   "tool_choice": "required"}),
            "multipleOf",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "tool", "content": "17"}]}),
            "tool_call_id",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}),
            "tool_choice",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                       "schema": {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}}}}),
            "multipleOf",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stop": (0..17).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
            "stop",
        ),
    ];
    for (request, mentions) in cases {
        let (status, body) = server.post_json("/v1/chat/completions", &request).await;
        let error = assert_error(status, &body, 400);
        let said = format!("{} {}", error["message"], error["param"]);
        assert!(
            said.contains(mentions),
            "{request} should mention {mentions}: {body}"
        );
    }

    let (status, body) = server
        .post_json("/v1/completions", &json!({"model": MODEL, "prompt": ""}))
        .await;
    assert_error(status, &body, 400);
    let (status, body) = server
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Hi", "logprobs": 21}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "logprobs");

    // A text-only model is not asked to count an image either.
    let with_image = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    for path in ["/v1/chat/completions", "/v1/tokenize"] {
        let (status, body) = server.post_json(path, &with_image).await;
        let error = assert_error(status, &body, 400);
        assert!(
            error["message"].as_str().unwrap().contains("image"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_a_400() {
    let server = Server::start(&["--ctx-size", "128"]);
    let (status, body) = server
        .post_json(
            "/v1/chat/completions",
            &chat(&"lorem ipsum ".repeat(200), 4),
        )
        .await;
    let error = assert_error(status, &body, 400);
    assert_eq!(error["code"], "context_length_exceeded", "{body}");
    // The server is still fine afterwards.
    let (status, _) = server
        .post_json("/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_models_routes_and_methods() {
    let server = Server::start(&[]);
    let mut body = chat("hi", 2);
    body["model"] = json!("no-such-model");
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(assert_error(status, &reply, 404)["code"], "model_not_found");

    let (status, reply) = server.get_json("/v1/models/no-such-model").await;
    assert_error(status, &reply, 404);

    let (status, reply) = server.get_json("/v1/nothing-here").await;
    assert_error(status, &reply, 404);

    let response = server
        .client
        .get(server.endpoint("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let reply: Value = response.json().await.unwrap();
    assert_error(status, &reply, 405);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let server = Server::start(&[]);
    let huge = "x".repeat(9 * 1024 * 1024);
    let (status, reply) = server
        .post_json("/v1/chat/completions", &chat(&huge, 2))
        .await;
    assert_error(status, &reply, 413);
}

/// A store entry whose blob is cut short, as a crash or a bad disk would leave it.
fn add_truncated_model(data_dir: &std::path::Path) {
    let models = data_dir.join("models");
    let manifest_path = models.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let good = manifest["models"][0].clone();
    let blob = models.join("blobs").join(good["blob"].as_str().unwrap());
    let bytes = std::fs::read(&blob).unwrap();
    let broken_blob = format!("sha256-{}", "0".repeat(64));
    std::fs::write(
        models.join("blobs").join(&broken_blob),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let mut broken = good;
    broken["name"] = json!("broken");
    broken["blob"] = json!(broken_blob);
    manifest["models"].as_array_mut().unwrap().push(broken);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[tokio::test]
async fn a_truncated_model_is_refused_while_others_keep_serving() {
    let server = Server::start_with(&[], &[], add_truncated_model);
    let mut body = chat("hi", 2);
    body["model"] = json!("broken");
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    let error = assert_error(status, &reply, 503);
    assert_eq!(error["code"], "model_unavailable", "{reply}");
    let (status, reply) = server
        .post_json("/v1/chat/completions", &chat("hi", 2))
        .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn a_truncated_default_model_makes_the_server_unready_not_dead() {
    let server = Server::start_with(&["--model", "broken"], &[], add_truncated_model);
    // The failed load is the server's state to report; liveness still answers.
    let (status, health) = server.get_json("/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let (status, reply) = server.get_json("/v1/health/ready").await;
    assert_error(status, &reply, 503);
    let (status, reply) = server
        .post_json("/v1/chat/completions", &chat("hi", 2))
        .await;
    assert_eq!(status, 200, "the good model still serves: {reply}");
}
