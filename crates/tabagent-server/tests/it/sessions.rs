//! Sessions: the server keeps a client's conversation (`X-TabAgent-Session`), in memory or, with
//! Redis, shared by every server.

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::cache::Redis;
use crate::server::{assert_error, Server};

fn config(engine: &FakeEngine, redis: Option<&Redis>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tabagent.toml");
    let redis = redis
        .map(|r| format!("[response_cache]\nredis_url = \"{}\"\n", r.url))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[[router.providers]]\nname = \"up\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n{redis}",
            engine.base_url
        ),
    )
    .unwrap();
    (dir, path)
}

async fn say(server: &Server, session: &str, text: &str, stream: bool) -> reqwest::Response {
    server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("x-tabagent-session", session)
        .json(&json!({"model": "m", "stream": stream,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

fn roles_and_texts(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_keeps_the_conversation_so_clients_send_only_new_turns() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["noted"])])
        .await
        .unwrap();
    let (_dir, path) = config(&engine, None);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let first = say(&server, "tab-7", "My name is Ada.", false).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-tabagent-session"], "tab-7");
    let second = say(&server, "tab-7", "What is my name?", false).await;
    assert_eq!(second.status(), 200);
    let sent = engine.bodies().pop().unwrap();
    assert_eq!(
        roles_and_texts(&sent["messages"]),
        vec![
            ("user".into(), "My name is Ada.".into()),
            ("assistant".into(), "noted".into()),
            ("user".into(), "What is my name?".into())
        ]
    );
    // A streamed answer is in the session by the time its `[DONE]` arrives.
    let body = say(&server, "tab-7", "Thanks.", true)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let (status, kept) = server.get_json("/v1/sessions/tab-7").await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["messages"].as_array().unwrap().len(), 6);
    assert_eq!(kept["messages"][5]["content"], "noted");

    // Another session is another conversation.
    say(&server, "tab-8", "Hello.", false).await;
    assert_eq!(
        engine.bodies().pop().unwrap()["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Clients may set a session (and keep their own state in it) and end it.
    let put = server
        .client
        .put(server.endpoint("/v1/sessions/tab-9"))
        .json(
            &json!({"messages": [{"role": "system", "content": "Be terse."}], "data": {"tab": 9}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let (_, kept) = server.get_json("/v1/sessions/tab-9").await;
    assert_eq!(kept["data"], json!({"tab": 9}));
    say(&server, "tab-9", "Hi.", false).await;
    assert_eq!(
        engine.bodies().pop().unwrap()["messages"][0]["content"],
        "Be terse."
    );
    let deleted = server
        .client
        .delete(server.endpoint("/v1/sessions/tab-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, body) = server.get_json("/v1/sessions/tab-9").await;
    assert_eq!(
        assert_error(status, &body, 404)["code"],
        "session_not_found"
    );

    // Bad input is the caller's mistake.
    let bad_role = server
        .client
        .put(server.endpoint("/v1/sessions/x"))
        .json(&json!({"messages": [{"role": "tool", "content": "17"}]}))
        .send()
        .await
        .unwrap();
    let status = bad_role.status().as_u16();
    let body: Value = bad_role.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "messages[0].role"
    );
    let (status, body) = server.get_json("/v1/sessions/a%20b").await;
    assert_eq!(assert_error(status, &body, 400)["param"], "id");
    let bad_header = say(&server, "no spaces allowed", "Hi.", false).await;
    let status = bad_header.status().as_u16();
    let body: Value = bad_header.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "x-tabagent-session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_every_server_sees_the_same_sessions() {
    let redis = Redis::start();
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["noted"])])
        .await
        .unwrap();
    let (_dir, path) = config(&engine, Some(&redis));
    let a = Server::start(&["--config", path.to_str().unwrap()]);
    let b = Server::start(&["--config", path.to_str().unwrap()]);
    assert_eq!(say(&a, "shared", "Remember 42.", false).await.status(), 200);
    assert_eq!(say(&b, "shared", "What number?", false).await.status(), 200);
    let sent = engine.bodies().pop().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
    assert_eq!(sent["messages"][0]["content"], "Remember 42.");
    let (_, kept) = a.get_json("/v1/sessions/shared").await;
    assert_eq!(kept["messages"].as_array().unwrap().len(), 4);

    // A session one server ends is gone on the other too (its own copy is not served).
    let deleted = b
        .client
        .delete(b.endpoint("/v1/sessions/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (status, body) = a.get_json("/v1/sessions/shared").await;
    assert_eq!(
        assert_error(status, &body, 404)["code"],
        "session_not_found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_belong_to_their_key_stay_bounded_and_keep_text_turns_only() {
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["noted"])])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tabagent.toml");
    let (alice, bob) = ("alice-key-0123456789", "bob-key-0123456789");
    std::fs::write(
        &path,
        format!(
            "[server]\napi_keys = [\"{alice}\", \"{bob}\"]\n\
             [response_cache]\nsession_max_bytes = 2048\n\
             [[router.providers]]\nname = \"up\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
            engine.base_url
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let chat = |key: &'static str, body: Value| {
        server
            .client
            .post(server.endpoint("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-tabagent-session", "tab-1")
            .json(&body)
            .send()
    };
    let hello = json!({"model": "m", "messages": [{"role": "user", "content": "I am Alice."}]});
    assert_eq!(chat(alice, hello).await.unwrap().status(), 200);
    // Bob's `tab-1` is not Alice's: he neither sees nor ends hers.
    let bob_hello = json!({"model": "m", "messages": [{"role": "user", "content": "Who am I?"}]});
    assert_eq!(chat(bob, bob_hello).await.unwrap().status(), 200);
    let sent = engine.bodies().pop().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "{sent}");
    let as_bob = server
        .client
        .delete(server.endpoint("/v1/sessions/tab-1"))
        .bearer_auth(bob)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bob.status(), 200);
    let as_alice = server
        .client
        .get(server.endpoint("/v1/sessions/tab-1"))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap();
    assert_eq!(as_alice.status(), 200);
    let kept: Value = as_alice.json().await.unwrap();
    assert_eq!(kept["messages"][0]["content"], "I am Alice.");

    // A session holds at most `session_max_bytes`: the oldest turns make room for new ones,
    // and a larger session cannot be put.
    let long = "x".repeat(900);
    for _ in 0..3 {
        let turn = json!({"model": "m", "messages": [{"role": "user", "content": long}]});
        assert_eq!(chat(alice, turn).await.unwrap().status(), 200);
    }
    let kept: Value = server
        .client
        .get(server.endpoint("/v1/sessions/tab-1"))
        .bearer_auth(alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: usize = kept["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().len() + m["role"].as_str().unwrap().len())
        .sum();
    assert!(texts <= 2048, "{texts} bytes kept");
    assert_eq!(
        kept["messages"].as_array().unwrap().last().unwrap()["content"],
        "noted"
    );
    assert_ne!(kept["messages"][0]["content"], "I am Alice.");
    let too_big = server
        .client
        .put(server.endpoint("/v1/sessions/tab-2"))
        .bearer_auth(alice)
        .json(&json!({"messages": [], "data": {"blob": "y".repeat(4096)}}))
        .send()
        .await
        .unwrap();
    let status = too_big.status().as_u16();
    let body: Value = too_big.json().await.unwrap();
    assert_error(status, &body, 400);

    // Tool turns cannot be kept as text: such a request is refused, not half-remembered.
    let with_tools = json!({"model": "m",
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]});
    let refused = chat(alice, with_tools).await.unwrap();
    let status = refused.status().as_u16();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        assert_error(status, &body, 400)["param"],
        "x-tabagent-session"
    );
}
