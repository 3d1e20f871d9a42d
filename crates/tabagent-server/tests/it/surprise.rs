//! Surprise-gated memory with the real models (SmolLM2 scores, all-MiniLM-L6-v2 embeds): a new
//! fact is kept, the same fact again (or reworded) is not; a fact said in a conversation is
//! kept by itself after the answer (seen arriving through the events stream, in Redis); and
//! search hits say how surprising the kept record was and how much of it is left.

use serde_json::{json, Value};

use crate::cache::Redis;
use crate::server::{minilm_dir, Server};

fn start(redis: &Redis) -> Server {
    let dir = minilm_dir();
    Server::start_with(
        &[],
        &[
            (
                "TABAGENT_MODELS__DIRECTORIES__MINILM",
                dir.to_str().unwrap(),
            ),
            ("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm"),
            ("TABAGENT_EVENTS__REDIS_URL", redis.url.as_str()),
        ],
        |_| {},
    )
}

async fn surprise(server: &Server, text: &str, keep: bool) -> Value {
    let (status, body) = server
        .post_json(
            "/v1/memory/surprise",
            &json!({"text": text, "keep": keep, "conversation": "planted"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn new_facts_are_kept_and_known_ones_are_not() {
    let redis = Redis::start();
    let server = start(&redis);
    let facts = [
        "My sister Ingrid lives in Tromsø and works as a marine biologist.",
        "The staging database runs PostgreSQL 16 on a host called birch-07.",
        "Our cat Miso only eats the salmon flavour of the dry food.",
    ];
    for fact in facts {
        let decision = surprise(&server, fact, true).await;
        assert_eq!(decision["kept"], true, "{decision}");
        assert!(decision["id"].is_i64(), "{decision}");
    }
    // Known: word for word, and reworded.
    for known in [
        "The staging database runs PostgreSQL 16 on a host called birch-07.",
        "Ingrid, my sister, is a marine biologist living in Tromsø.",
    ] {
        let decision = surprise(&server, known, true).await;
        assert_eq!(decision["kept"], false, "{decision}");
        let measured = &decision["surprise"];
        assert!(measured["score"].as_f64().unwrap() < 0.5, "{decision}");
        // Both measures agree: the model predicted it from the notes, and a vector is close.
        assert!(
            measured["relative_surprisal"].as_f64().unwrap() < 0.7,
            "{decision}"
        );
        assert!(measured["novelty"].as_f64().unwrap() < 0.3, "{decision}");
        assert!(
            measured["surprisal"].as_f64() < measured["baseline"].as_f64(),
            "{decision}"
        );
    }
    // Measuring alone keeps nothing.
    let novel = "The third-floor printer jams whenever recycled paper is used.";
    let measured = surprise(&server, novel, false).await;
    assert_eq!(
        (measured["kept"].clone(), measured["id"].clone()),
        (json!(true), Value::Null)
    );
    let (_, listed) = server
        .get_json("/v1/memory/knowledge?kind=remembered&limit=50")
        .await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        facts.len(),
        "{listed}"
    );

    // A hit says why: how surprising the record was when kept, and its strength now.
    let (status, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "what does the cat eat?", "stores": ["knowledge"], "limit": 1}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let why = &found["data"][0]["why"]["surprise"];
    let (score, strength) = (
        why["score"].as_f64().unwrap(),
        why["strength"].as_f64().unwrap(),
    );
    assert!(
        score >= 0.5 && strength <= score && strength > score * 0.99,
        "{found}"
    );

    // Said in a conversation: kept after the answer, by itself.
    let said = "The quarterly offsite is booked at the Lakeside Lodge in Annecy.";
    let made = crate::events::redis_cli_json(
        &redis,
        &[
            "XGROUP",
            "CREATE",
            "tabagent:memory",
            "watch",
            "$",
            "MKSTREAM",
        ],
    );
    assert_eq!(made, "OK");
    let (status, answer) = server
        .post_json(
            "/v1/chat/completions",
            &json!({"model": crate::server::MODEL, "conversation_id": "team",
                    "messages": [{"role": "user", "content": said}], "max_tokens": 8}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let remembered =
        crate::events::wait_for_insert(&redis, "watch", |change| change["kind"] == "remembered");
    let (_, record) = server
        .get_json(&format!("/v1/memory/knowledge/{}", remembered["id"]))
        .await;
    assert_eq!(record["text"], said, "{record}");
    assert_eq!(record["conversation"], "team");
    assert!(
        record["data"]["surprise"]["score"].as_f64().unwrap() >= 0.5,
        "{record}"
    );
}
