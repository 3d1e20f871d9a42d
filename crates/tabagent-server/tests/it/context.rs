//! The context-enhancement step: what the memory holds about the question is added to the
//! prompt, for a route that asks for it or a request that does.

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::routing::server_with_router;
use crate::server::assert_error;

fn question(model: &str, system: Option<&str>) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": "What is the launch code word?"}));
    json!({"model": model, "messages": messages, "max_tokens": 8})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_with_context_grounds_the_prompt_in_what_the_memory_holds() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["ok"])])
        .await
        .unwrap();
    let (_config, server) = server_with_router(&format!(
        r#"
[[router.providers]]
name = "engine"
base_url = "{}"
models = ["m"]
capabilities = {{ tools = true }}

[router.routes.grounded.context]
stores = ["knowledge"]
limit = 2

[router.aliases]
ask = "grounded"
"#,
        engine.base_url
    ));
    for text in [
        "The launch code word is heliotrope.",
        "Lunch is served at noon in the east wing.",
    ] {
        let (status, body) = server
            .post_json("/v1/memory/knowledge", &json!({ "text": text }))
            .await;
        assert!(status == 200 || status == 201, "{body}");
    }
    // Not in the searched store: never added.
    let (status, _) = server
        .post_json(
            "/v1/memory/experience",
            &json!({"text": "The launch code word was marigold last year."}),
        )
        .await;
    assert!(status == 200 || status == 201);

    let response = server
        .post("/v1/chat/completions", &question("grounded", None))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tabagent-context-records"], "1");
    let sent = engine.bodies().pop().unwrap();
    assert_eq!(sent["messages"][0]["role"], "system");
    let context = sent["messages"][0]["content"].as_str().unwrap();
    assert!(context.contains("heliotrope"), "{context}");
    assert!(!context.contains("marigold"), "{context}");
    assert_eq!(
        sent["messages"][1]["content"],
        "What is the launch code word?"
    );

    // A system message of the caller's keeps its place, the context after it.
    let (status, _) = server
        .post_json(
            "/v1/chat/completions",
            &question("grounded", Some("Be brief.")),
        )
        .await;
    assert_eq!(status, 200);
    let sent = engine.bodies().pop().unwrap();
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("Be brief.") && system.contains("heliotrope"),
        "{system}"
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2);
    // An alias of the route gets its context too.
    let response = server
        .post("/v1/chat/completions", &question("ask", None))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tabagent-context-records"], "1");
    engine.bodies().pop().unwrap();

    let send = |body: Value, header: &'static str| {
        server
            .client
            .post(server.endpoint("/v1/chat/completions"))
            .header("x-tabagent-context", header)
            .json(&body)
            .send()
    };
    // Turned off for one request.
    let response = send(question("grounded", None), "none").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("x-tabagent-context-records")
        .is_none());
    assert_eq!(
        engine.bodies().pop().unwrap()["messages"][0]["role"],
        "user"
    );
    // Asked for by a request to a plain model, and carried into the caller's own messages
    // when they are sent as written (a request with tools).
    let mut with_tools = question("m", None);
    with_tools["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let response = send(with_tools, "memory").await.unwrap();
    assert_eq!(response.status(), 200);
    let sent = engine.bodies().pop().unwrap();
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("heliotrope"),
        "{sent}"
    );
    assert!(sent["tools"].is_array());
    // A plain model without the header gets nothing.
    let (status, _) = server
        .post_json("/v1/chat/completions", &question("m", None))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        engine.bodies().pop().unwrap()["messages"][0]["role"],
        "user"
    );

    let response = send(question("m", None), "everything").await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "x-tabagent-context"
    );
}
