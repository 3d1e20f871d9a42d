//! The knowledge graph over HTTP (with Qwen2.5-Coder extracting under a JSON-schema grammar),
//! and conversations recorded from chat requests and summarized in the background.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{assert_error, Server, MODEL};

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_graph_is_built_walked_merged_and_consolidated_over_http() {
    let server = Server::start(&[]);
    let (status, ada) = server
        .post_json(
            "/v1/memory/graph/entities",
            &json!({"name": "Ada Lovelace", "type": "person", "aliases": ["Countess of Lovelace"]}),
        )
        .await;
    assert_eq!(status, 200, "{ada}");
    let (status, txn) = server
        .post_json(
            "/v1/memory/transaction",
            &json!({"operations": [
                {"op": "insert", "store": "knowledge", "record": {"text": "Ada worked with Babbage.", "kind": "passage"}},
                {"op": "relate", "relation": {"subject": "countess of lovelace", "relation": "worked with", "object": "Charles Babbage"}},
                {"op": "relate", "relation": {"subject": "Charles Babbage", "relation": "designed", "object": "Analytical Engine"}},
                {"op": "entity", "entity": {"name": "the analytical engine", "type": "machine"}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{txn}");
    let results = txn["results"].as_array().unwrap();
    assert_eq!(
        results[1]["subject"], ada["id"],
        "an alias names the entity"
    );
    assert_eq!(results[1]["relation"], "worked_with");

    let (status, around) = server
        .post_json(
            "/v1/memory/graph/neighbourhood",
            &json!({"entity": "Ada Lovelace", "hops": 2}),
        )
        .await;
    assert_eq!(status, 200, "{around}");
    assert_eq!(
        names(&around["entities"]),
        vec!["Ada Lovelace", "Charles Babbage", "Analytical Engine"]
    );
    assert_eq!(around["entities"][2]["hops"], 2);
    let (status, path) = server
        .post_json(
            "/v1/memory/graph/path",
            &json!({"from": ada["id"], "to": "analytical engine", "direction": "out"}),
        )
        .await;
    assert_eq!(status, 200, "{path}");
    assert_eq!(path["found"], true);
    assert_eq!(path["relations"].as_array().unwrap().len(), 2);
    let (_, backwards) = server
        .post_json(
            "/v1/memory/graph/path",
            &json!({"from": "analytical engine", "to": ada["id"], "direction": "out"}),
        )
        .await;
    assert_eq!(backwards["found"], false);

    // "the analytical engine" and "Analytical Engine" collide loosely; consolidation merges
    // them, after a dry run that changes nothing.
    let (status, planned) = server
        .post_json("/v1/memory/graph/consolidate", &json!({"dry_run": true}))
        .await;
    assert_eq!(status, 200, "{planned}");
    assert_eq!(planned["applied"], false);
    assert_eq!(planned["merges"].as_array().unwrap().len(), 1, "{planned}");
    let (status, engine) = server
        .get_json("/v1/memory/graph/entities/the%20analytical%20engine")
        .await;
    assert_eq!(status, 200, "{engine}");
    let (_, done) = server
        .post_json("/v1/memory/graph/consolidate", &json!({}))
        .await;
    assert_eq!(done["merges"], planned["merges"]);
    let (_, merged) = server
        .get_json("/v1/memory/graph/entities/the%20analytical%20engine")
        .await;
    assert_ne!(merged["id"], engine["id"], "{merged}");
    assert_eq!(
        merged["type"], "machine",
        "the kept entity took the type it lacked"
    );

    // A relation by id, deleted once.
    let relation = results[2]["id"].as_i64().unwrap();
    let (status, got) = server
        .get_json(&format!("/v1/memory/graph/relations/{relation}"))
        .await;
    assert_eq!(status, 200, "{got}");
    let response = server
        .client
        .delete(server.endpoint(&format!("/v1/memory/graph/relations/{relation}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, gone) = server
        .get_json(&format!("/v1/memory/graph/relations/{relation}"))
        .await;
    assert_eq!(
        assert_error(status, &gone, 404)["code"],
        "relation_not_found"
    );

    // Bad input: unknown entity, too many hops, a bad direction, a merge with nothing.
    let (status, body) = server
        .post_json(
            "/v1/memory/graph/neighbourhood",
            &json!({"entity": "Nobody At All"}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 404)["code"], "entity_not_found");
    let (status, body) = server
        .post_json(
            "/v1/memory/graph/neighbourhood",
            &json!({"entity": "Ada Lovelace", "hops": 99}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "hops");
    let (status, body) = server
        .post_json(
            "/v1/memory/graph/path",
            &json!({"from": "Ada Lovelace", "to": "Charles Babbage", "direction": "sideways"}),
        )
        .await;
    assert_error(status, &body, 400);
    let (status, body) = server
        .post_json(
            "/v1/memory/graph/merge",
            &json!({"kept": ada["id"], "merged": []}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "merge");
    let (status, body) = server
        .post_json(
            "/v1/memory/knowledge",
            &json!({"text": "x", "kind": "entity"}),
        )
        .await;
    assert_eq!(assert_error(status, &body, 400)["param"], "kind");
}

/// The name as a path segment.
fn escaped(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn extraction_stores_what_the_model_found_and_cites_the_text() {
    const EXTRACTOR: &str = "qwen";
    let qwen = std::env::var_os("TABAGENT_TEST_QWEN_GGUF")
        .expect("TABAGENT_TEST_QWEN_GGUF is not set: run the tests with scripts/test");
    let server = Server::start_with(&[], &[], |data| {
        crate::server::import(data, std::path::Path::new(&qwen), EXTRACTOR)
    });
    let text =
        "Marie Curie was born in Warsaw. She worked at the University of Paris with Pierre Curie.";
    let (status, dry) = server
        .post_json(
            "/v1/memory/graph/extract",
            &json!({"text": text, "save": false}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["model"], MODEL, "the default model extracts");
    assert!(dry["evidence"].is_null());
    let (_, stats) = server.get_json("/v1/memory").await;
    assert!(
        stats["stores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["records"] == 0),
        "a dry extraction stores nothing: {stats}"
    );

    let (status, found) = server
        .post_json(
            "/v1/memory/graph/extract",
            &json!({"text": text, "source": "test://curie", "model": EXTRACTOR}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    // The people and the place of work the text plants were found, each with a type.
    let extracted = found["extracted"]["entities"].as_array().unwrap();
    let named = |name: &str| {
        extracted
            .iter()
            .find(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .unwrap_or_else(|| panic!("`{name}` was not extracted: {found}"))
    };
    for planted in ["Marie Curie", "Pierre Curie", "University of Paris"] {
        assert!(
            named(planted)["type"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{found}"
        );
    }
    let evidence = found["evidence"].as_i64().unwrap();
    let (status, passage) = server
        .get_json(&format!("/v1/memory/knowledge/{evidence}"))
        .await;
    assert_eq!(status, 200, "{passage}");
    assert_eq!(passage["text"], text);
    assert_eq!(passage["kind"], "passage");
    assert_eq!(passage["source"], "test://curie");
    // Everything the model named is now an entity, found by that name.
    for e in extracted {
        let name = e["name"].as_str().unwrap();
        let url = format!("/v1/memory/graph/entities/{}", escaped(name));
        let (status, entity) = server.get_json(&url).await;
        assert_eq!(status, 200, "{name}: {entity}");
    }
    // Marie Curie's tie to the University of Paris was stored, citing the passage.
    let stored = found["relations"].as_array().unwrap();
    assert!(!stored.is_empty(), "{found}");
    for relation in stored {
        assert_eq!(relation["evidence"], evidence, "{relation}");
        assert_eq!(relation["source"], "test://curie");
        for end in ["subject", "object"] {
            let (status, entity) = server
                .get_json(&format!("/v1/memory/graph/entities/{}", relation[end]))
                .await;
            assert_eq!(status, 200, "{entity}");
        }
    }
    let (status, around) = server
        .post_json(
            "/v1/memory/graph/neighbourhood",
            &json!({"entity": "Marie Curie", "hops": 1}),
        )
        .await;
    assert_eq!(status, 200, "{around}");
    assert!(
        around.to_string().contains("University of Paris"),
        "Marie Curie's neighbourhood: {around}"
    );
    assert!(
        found["relations"].as_array().unwrap().len()
            <= found["extracted"]["relations"].as_array().unwrap().len()
    );

    for (body, param) in [
        (json!({"text": "  "}), "text"),
        (json!({"text": "x".repeat(40_000)}), "text"),
        (json!({"text": "x", "max_tokens": 0}), "max_tokens"),
        (json!({"text": "x", "evidence": 999_999}), "evidence"),
    ] {
        let (status, error) = server.post_json("/v1/memory/graph/extract", &body).await;
        assert_eq!(assert_error(status, &error, 400)["param"], param);
    }
    let (status, error) = server
        .post_json(
            "/v1/memory/graph/extract",
            &json!({"text": "x", "model": "no-such-model"}),
        )
        .await;
    assert_error(status, &error, 404);
}

async fn conversation(server: &Server, id: &str) -> Vec<Value> {
    let (status, list) = server
        .get_json(&format!(
            "/v1/memory/conversations?conversation={id}&order=oldest"
        ))
        .await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn chats_with_a_conversation_id_are_recorded_and_summarized_in_the_background() {
    let server = Server::start_with(&[], &[("TABAGENT_MEMORY__SUMMARIZE_AFTER", "4")], |_| {});
    let first = json!({
        "model": MODEL,
        "conversation_id": "trip",
        "messages": [
            {"role": "system", "content": "You are a travel agent."},
            {"role": "user", "content": "I want to visit Lisbon in May."}
        ],
        "max_tokens": 24,
        "temperature": 0
    });
    let response = server.post("/v1/chat/completions", &first).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-conversation-id"], "trip");
    let reply: Value = response.json().await.unwrap();
    let answer = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let recorded = conversation(&server, "trip").await;
    let said: Vec<(&str, &str)> = recorded
        .iter()
        .map(|r| (r["role"].as_str().unwrap(), r["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        vec![
            ("system", "You are a travel agent."),
            ("user", "I want to visit Lisbon in May."),
            ("assistant", answer.as_str()),
        ]
    );
    assert_eq!(recorded[2]["data"]["model"], MODEL);

    // The next turn, streamed and named by header: only the new message and the reply are
    // added, and the reply is recorded before the stream says [DONE].
    let second = json!({
        "model": MODEL,
        "stream": true,
        "messages": [
            {"role": "system", "content": "You are a travel agent."},
            {"role": "user", "content": "I want to visit Lisbon in May."},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Find me a hotel near the river."}
        ],
        "max_tokens": 24,
        "temperature": 0
    });
    let response = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("X-Conversation-Id", "trip")
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-conversation-id"], "trip");
    let body = response.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let streamed: String = body
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
    let recorded = conversation(&server, "trip").await;
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[3]["text"], "Find me a hotel near the river.");
    assert_eq!(recorded[4]["role"], "assistant");
    assert_eq!(recorded[4]["text"], streamed.as_str());

    // Five messages passed `summarize_after = 4`: the summarizer writes one summary.
    let deadline = Instant::now() + Duration::from_secs(300);
    let summary = loop {
        let (_, list) = server
            .get_json("/v1/memory/summaries?conversation=trip")
            .await;
        if let Some(s) = list["data"].as_array().and_then(|d| d.first()) {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no summary was written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(summary["key"], "conversation:trip");
    assert_eq!(summary["data"]["through"], recorded[4]["id"]);
    assert_eq!(summary["data"]["messages"], 5);
    assert!(!summary["text"].as_str().unwrap().is_empty());
    // Asked for again with nothing new, the summary in force comes back unchanged.
    let (status, again) = server
        .post_json("/v1/memory/conversations/trip/summarize", &json!({}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], summary["id"]);
    assert_eq!(again["text"], summary["text"]);

    // Bad ids: header and field disagree, blank; an unknown conversation has no summary.
    let mut disagree = first.clone();
    disagree["conversation_id"] = json!("other");
    let response = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("X-Conversation-Id", "trip")
        .json(&disagree)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(assert_error(status, &body, 400)["param"], "conversation_id");
    let mut blank = first.clone();
    blank["conversation_id"] = json!(" ");
    let (status, body) = server.post_json("/v1/chat/completions", &blank).await;
    assert_eq!(assert_error(status, &body, 400)["param"], "conversation_id");
    assert_eq!(
        conversation(&server, "trip").await.len(),
        5,
        "refused requests record nothing"
    );
    let (status, body) = server
        .post_json("/v1/memory/conversations/nowhere/summarize", &json!({}))
        .await;
    assert_eq!(
        assert_error(status, &body, 404)["code"],
        "conversation_not_found"
    );
}
