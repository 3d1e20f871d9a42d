//! Requests with tools, tool turns, images or log probabilities go to remote engines with the
//! capability, written as OpenAI's API has them, and the answers' tool calls and log
//! probabilities come back in OpenAI's shape.

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::routing::server_with_router;
use crate::server::assert_error;

fn weather_request() -> Value {
    json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"celsius\": 17}"},
            {"role": "user", "content": "And in Paris?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "logprobs": true,
        "top_logprobs": 2
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_images_and_logprobs_reach_a_capable_engine_and_its_tool_calls_come_back() {
    let plain = FakeEngine::start(vec![Behaviour::Answer(vec!["plain"])])
        .await
        .unwrap();
    let capable = FakeEngine::start(vec![Behaviour::CallTool(vec![
        "get_weather",
        "{\"city\":",
        "\"Paris\"}",
    ])])
    .await
    .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[router]
explore = false

# Preferred, but it cannot take tools or images.
[[router.providers]]
name = "plain"
base_url = "{}"
models = ["m", "plain-only"]
weight = 5.0

[[router.providers]]
name = "capable"
base_url = "{}"
models = ["m"]
capabilities = {{ tools = true, vision = true }}
"#,
        plain.base_url, capable.base_url
    ));

    let (status, reply) = server
        .post_json("/v1/chat/completions", &weather_request())
        .await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null(), "{reply}");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "call_fake", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(choice["logprobs"]["content"].as_array().unwrap().len(), 2);
    assert_eq!(
        plain.requests(),
        0,
        "the provider without tools was passed over"
    );
    let sent = &capable.bodies()[0];
    let asked = weather_request();
    assert_eq!(sent["tools"], asked["tools"]);
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(
        sent["messages"], asked["messages"],
        "tool turns sent as written"
    );
    assert_eq!(
        (sent["logprobs"].clone(), sent["top_logprobs"].clone()),
        (json!(true), json!(2))
    );
    assert_eq!(sent["stream"], true);

    // Streamed: the tool-call deltas arrive as the engine sent them.
    let mut streamed = weather_request();
    streamed["stream"] = json!(true);
    let body = server.post_text("/v1/chat/completions", &streamed).await;
    let chunks: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"city\":\"Paris\"}");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_fake"));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // An image goes to the provider with `vision`, its part untouched.
    let image = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    ]}]});
    let (status, reply) = server.post_json("/v1/chat/completions", &image).await;
    assert_eq!(status, 200, "{reply}");
    let sent = capable.bodies().pop().unwrap();
    assert_eq!(sent["messages"], image["messages"]);
    assert_eq!(plain.requests(), 0);

    // Nothing serving the model can take tools: the caller is told which capability is missing.
    let mut no_tools = weather_request();
    no_tools["model"] = json!("plain-only");
    let (status, body) = server.post_json("/v1/chat/completions", &no_tools).await;
    let error = assert_error(status, &body, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`tools` capability"),
        "{body}"
    );

    // A local model takes the same conversation in process (its template has no tools, so
    // they are described to it), with a log probability for every token it generated.
    let mut local = weather_request();
    local["model"] = json!(crate::server::MODEL);
    local["max_tokens"] = json!(12);
    local["temperature"] = json!(0);
    let (status, reply) = server.post_json("/v1/chat/completions", &local).await;
    assert_eq!(status, 200, "{reply}");
    let entries = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        entries.len() as u64,
        reply["usage"]["completion_tokens"].as_u64().unwrap(),
        "{reply}"
    );
    assert!(entries
        .iter()
        .all(|e| e["top_logprobs"].as_array().unwrap().len() == 2));
    assert_eq!(capable.bodies().len(), 3, "the local model answered it");
}
