use serde_json::{json, Value};

use crate::server::{chat, Server, MODEL};

#[tokio::test]
async fn chat_completion_has_the_openai_shape_and_real_usage() {
    let server = Server::start(&[]);
    let body = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "What colour is the sky?"},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": [{"type": "text", "text": "And grass?"}]}
        ],
        "max_tokens": 12,
        "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 7
    });
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], MODEL);
    let choice = &reply["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"]
        .as_str()
        .unwrap()
        .trim()
        .is_empty());
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &reply["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(
        prompt > 20,
        "four templated messages are more than 20 tokens: {usage}"
    );
    assert!((1..=12).contains(&completion));
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_sampled_text() {
    let server = Server::start(&[]);
    let mut body = chat("Invent a name for a boat.", 16);
    body["temperature"] = json!(1.0);
    body["seed"] = json!(1234);
    let (_, first) = server.post_json("/v1/chat/completions", &body).await;
    let (_, second) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(
        first["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn max_tokens_and_max_completion_tokens_end_with_length() {
    let server = Server::start(&[]);
    for field in ["max_tokens", "max_completion_tokens"] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Write an essay on rivers."}], field: 4});
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["finish_reason"], "length", "{field}");
        assert_eq!(reply["usage"]["completion_tokens"], 4, "{field}");
    }
}

#[tokio::test]
async fn stop_strings_end_the_output_before_them() {
    let server = Server::start(&[]);
    let (_, free) = server
        .post_json(
            "/v1/chat/completions",
            &chat("Describe a dog in two sentences.", 48),
        )
        .await;
    let text = free["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() > 6, "need a longer reply: {text:?}");
    let stop = words[3].to_string();
    let expected = &text[..text.find(&stop).unwrap()];
    for stop_field in [json!(stop), json!(["never-appears-xyz", stop])] {
        let mut body = chat("Describe a dog in two sentences.", 48);
        body["stop"] = stop_field;
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], expected);
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn json_schema_response_format_is_enforced() {
    let server = Server::start(&[]);
    let schema = json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
            "genre": {"enum": ["drama", "comedy", "horror"]}
        },
        "required": ["title", "year", "genre"],
        "additionalProperties": false
    });
    let mut body = chat("Recommend a film.", 120);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "film", "schema": schema, "strict": true}});
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    let content: Value =
        serde_json::from_str(reply["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    let film = content.as_object().unwrap();
    assert_eq!(film.len(), 3, "{content}");
    assert!(film["title"].as_str().unwrap().chars().count() <= 40);
    assert!((1900..=2100).contains(&film["year"].as_i64().unwrap()));
    assert!(["drama", "comedy", "horror"].contains(&film["genre"].as_str().unwrap()));
}

#[tokio::test]
async fn json_object_response_format_gives_an_object() {
    let server = Server::start(&[]);
    let mut body = chat("Give the capital of Italy as JSON with a key city.", 200);
    body["response_format"] = json!({"type": "json_object"});
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["choices"][0]["finish_reason"], "stop",
        "the grammar lets the object end: {reply}"
    );
    let content: Value =
        serde_json::from_str(reply["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content.is_object(), "{content}");
}

#[tokio::test]
async fn completions_continue_a_raw_prompt() {
    let server = Server::start(&[]);
    let body = json!({"model": MODEL, "prompt": "Monday, Tuesday, Wednesday,", "max_tokens": 3, "temperature": 0});
    let (status, reply) = server.post_json("/v1/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["object"], "text_completion");
    assert!(
        reply["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Thursday"),
        "{reply}"
    );
    assert_eq!(reply["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn models_are_listed_and_described() {
    let server = Server::start(&[]);
    let (status, list) = server.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL]);
    let (status, model) = server.get_json(&format!("/v1/models/{MODEL}")).await;
    assert_eq!(status, 200);
    assert_eq!(model["id"], MODEL);
    assert_eq!(model["object"], "model");
    // SmolLM2-135M in Q4_1, read from the file's header.
    assert_eq!(model["quantization"], "Q4_1", "{model}");
    let parameters = model["parameters"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&parameters), "{model}");
    assert_eq!(model["architecture"], "llama", "{model}");
}

#[tokio::test]
async fn health_readiness_and_config() {
    let server = Server::start_with(
        &[],
        &[("TABAGENT_API_KEY", "a-very-secret-key-123")],
        |_| {},
    );
    let (status, health) = server.get_json("/v1/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    // A request loads the default model; readiness follows.
    let authed = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .bearer_auth("a-very-secret-key-123")
        .json(&chat("Hi", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), 200);
    let (status, ready) = server.get_json("/v1/health/ready").await;
    assert_eq!(status, 200, "{ready}");

    let config: Value = server
        .client
        .get(server.endpoint("/v1/config"))
        .bearer_auth("a-very-secret-key-123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = config.to_string();
    assert!(!text.contains("a-very-secret-key-123"), "{text}");
    assert_eq!(config["server"]["host"], "127.0.0.1");
    assert_eq!(config["models"]["default"], MODEL);
}

#[tokio::test]
async fn openapi_document_and_offline_docs_ui() {
    let server = Server::start(&[]);
    let (status, doc) = server.get_json("/api-doc/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/health",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let page = server
        .client
        .get(server.endpoint("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page must not load anything from a CDN"
    );
    let script = server
        .client
        .get(server.endpoint("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
}
