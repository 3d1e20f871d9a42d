//! `/v1/memory` over HTTP with the real all-MiniLM-L6-v2 as the embedding model, and
//! `tabagent memory` / `tabagent db` on the same data directory while the server runs.

use serde_json::{json, Value};

use crate::server::{assert_error, minilm_dir, tabagent, Server};

fn start() -> Server {
    let dir = minilm_dir();
    Server::start_with(
        &[],
        &[
            (
                "TABAGENT_MODELS__DIRECTORIES__MINILM",
                dir.to_str().unwrap(),
            ),
            ("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm"),
        ],
        |_| {},
    )
}

#[tokio::test]
async fn records_are_embedded_and_found_by_meaning_keyword_and_both() {
    let server = start();
    let facts = [
        ("knowledge", "The cat is sleeping on the warm windowsill."),
        ("knowledge", "Quarterly revenue grew by twelve percent."),
        (
            "experience",
            "Restarting the router fixed the network outage.",
        ),
        (
            "embeddings",
            "Photosynthesis turns sunlight into chemical energy in plants.",
        ),
    ];
    let mut ids = Vec::new();
    for (store, text) in facts {
        let (status, body) = server
            .post_json(
                &format!("/v1/memory/{store}"),
                &json!({"text": text, "tags": ["t"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["space"], "minilm",
            "embedded with the configured model: {body}"
        );
        assert_eq!(body["store"], store);
        ids.push(body["id"].as_i64().unwrap());
    }

    // No shared word with the cat sentence: only the vector list can find it.
    let (status, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "a feline napping", "limit": 2}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let first = &found["data"][0];
    assert_eq!(first["record"]["id"].as_i64(), Some(ids[0]), "{found}");
    assert_eq!(first["why"]["vector_rank"], 1);
    assert!(first["why"]["keyword_rank"].is_null());

    let (_, keyword) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "router outage", "mode": "keyword"}),
        )
        .await;
    let hits = keyword["data"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{keyword}");
    assert_eq!(hits[0]["record"]["id"].as_i64(), Some(ids[2]));
    assert!(hits[0]["why"]["vector_rank"].is_null());

    let (_, both) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "how plants use sunlight", "stores": ["embeddings", "knowledge"]}),
        )
        .await;
    let top = &both["data"][0];
    assert_eq!(top["record"]["id"].as_i64(), Some(ids[3]), "{both}");
    assert_eq!(top["why"]["vector_rank"], 1);
    assert!(top["why"]["keyword_rank"].is_number());
    assert!(both["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["record"]["store"] != "experience"));

    let (status, listed) = server
        .get_json("/v1/memory/knowledge?order=oldest&limit=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"].as_i64(), Some(ids[0]));
    let next = listed["next"].as_i64().unwrap();
    let (_, page2) = server
        .get_json(&format!(
            "/v1/memory/knowledge?order=oldest&limit=1&after={next}"
        ))
        .await;
    assert_eq!(page2["data"][0]["id"].as_i64(), Some(ids[1]));
    assert!(page2["next"].is_null());

    let (status, _) = server
        .delete_json(&format!("/v1/memory/knowledge/{}", ids[0]))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .get_json(&format!("/v1/memory/knowledge/{}", ids[0]))
        .await;
    assert_error(status, &body, 404);
    let (_, again) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "a feline napping", "limit": 5}),
        )
        .await;
    // The search still works and finds the knowledge that is left, but not the deleted record.
    let found: Vec<i64> = again["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["record"]["id"].as_i64())
        .collect();
    assert!(found.contains(&ids[1]), "{again}");
    assert!(!found.contains(&ids[0]), "{again}");
}

#[tokio::test]
async fn a_transaction_across_stores_is_all_or_nothing() {
    let server = start();
    let (status, body) = server
        .post_json(
            "/v1/memory/transaction",
            &json!({"operations": [
                {"op": "insert", "store": "conversations", "record": {"text": "hello", "role": "user", "conversation": "c1"}},
                {"op": "insert", "store": "summaries", "record": {"text": "greeting", "conversation": "c1"}},
                {"op": "delete", "id": 424242}
            ]}),
        )
        .await;
    assert_error(status, &body, 404);
    let (_, stats) = server.get_json("/v1/memory").await;
    let total: u64 = stats["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["records"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 0,
        "nothing of the failed transaction stayed: {stats}"
    );

    let (status, body) = server
        .post_json(
            "/v1/memory/transaction",
            &json!({"operations": [
                {"op": "insert", "store": "conversations", "record": {"text": "hello", "role": "user", "conversation": "c1"}},
                {"op": "insert", "store": "summaries", "record": {"text": "greeting", "conversation": "c1"}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["store"], "summaries");
    let (_, stats) = server.get_json("/v1/memory").await;
    assert_eq!(stats["embedding_model"], "minilm");
}

#[tokio::test]
async fn bad_memory_requests_get_clear_errors() {
    let server = start();
    // One record, so that the `minilm` space exists with its 384 dimensions.
    let (status, _) = server
        .post_json("/v1/memory/knowledge", &json!({"text": "seed"}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = server
        .post_json("/v1/memory/nope", &json!({"text": "x"}))
        .await;
    assert_eq!(assert_error(status, &body, 404)["param"], "store");
    let cases = [
        (
            "/v1/memory/knowledge",
            json!({"text": "x", "vector": [1.0]}),
            "vector",
        ),
        (
            "/v1/memory/knowledge",
            json!({"text": "x", "data": [1]}),
            "data",
        ),
        (
            "/v1/memory/knowledge",
            json!({"text": "x", "bogus": 1}),
            "bogus",
        ),
        (
            "/v1/memory/search",
            json!({"query": "x", "mode": "fuzzy"}),
            "mode",
        ),
        (
            "/v1/memory/search",
            json!({"query": "x", "limit": 0}),
            "limit",
        ),
        (
            "/v1/memory/search",
            json!({"query": "x", "stores": ["nope"]}),
            "store",
        ),
        (
            "/v1/memory/search",
            json!({"query": "x", "since": 5, "until": 1}),
            "since",
        ),
        (
            "/v1/memory/search",
            json!({"vector": [1.0, 2.0], "space": "minilm", "mode": "vector"}),
            "vector",
        ),
    ];
    for (path, request, param) in cases {
        let (status, body) = server.post_json(path, &request).await;
        let error = assert_error(status, &body, 400);
        assert!(
            error["param"].as_str().is_some_and(|p| p.contains(param)),
            "{path} {request}: {body}"
        );
    }
    for path in [
        "/v1/memory/knowledge?limit=abc",
        "/v1/memory/knowledge?color=red",
        "/v1/memory/knowledge/abc",
    ] {
        let (status, body) = server.get_json(path).await;
        assert_error(status, &body, 400);
    }
}

#[tokio::test]
async fn the_cli_reads_backs_up_and_checks_the_memory_the_server_writes() {
    let server = start();
    let (status, body) = server
        .post_json(
            "/v1/memory/knowledge",
            &json!({"text": "Lisbon is the capital of Portugal", "key": "pt"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let data_dir = server.data_dir().to_path_buf();
    let cli = |args: &[&str]| {
        let out = tabagent(&data_dir).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stdout, stderr) = cli(&["memory", "search", "capital Portugal"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Lisbon"), "{stdout}");

    let (ok, stdout, stderr) = cli(&["db", "check"]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("ok: 1 records, 1 vectors"), "{stdout}");

    let backup = data_dir.join("backup.sqlite");
    let (ok, _, stderr) = cli(&["db", "backup", backup.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["db", "backup", backup.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("exists"), "{stderr}");

    // A CLI write is seen by the server, vectors and all.
    let (ok, id, stderr) = cli(&[
        "memory",
        "add",
        "knowledge",
        "Oslo is the capital of Norway",
    ]);
    assert!(ok, "{stderr}");
    let id: i64 = id.trim().parse().unwrap();
    let (status, record) = server.get_json(&format!("/v1/memory/knowledge/{id}")).await;
    assert_eq!(status, 200, "{record}");

    let (ok, _, stderr) = cli(&["memory", "add", "nowhere", "x"]);
    assert!(!ok);
    assert!(stderr.contains("unknown store"), "{stderr}");
    let (ok, _, stderr) = cli(&["db", "restore", data_dir.join("missing").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no such file"), "{stderr}");

    // The graph from the CLI, walked by the server.
    let (ok, _, stderr) = cli(&[
        "memory", "entity", "Lisbon", "--type", "city", "--alias", "Lisboa",
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["memory", "relate", "lisboa", "capital of", "Portugal"]);
    assert!(ok, "{stderr}");
    let (status, path) = server
        .post_json(
            "/v1/memory/graph/path",
            &json!({"from": "Lisbon", "to": "portugal"}),
        )
        .await;
    assert_eq!(status, 200, "{path}");
    assert_eq!(path["relations"][0]["relation"], "capital_of");
    let (ok, stdout, stderr) = cli(&["memory", "neighbours", "Portugal", "--direction", "in"]);
    assert!(ok, "{stderr}");
    let around: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(around["entities"][1]["entity"]["name"], "Lisbon");
    let (ok, _, stderr) = cli(&["memory", "path", "Portugal", "Lisbon", "--direction", "out"]);
    assert!(!ok);
    assert!(stderr.contains("no path"), "{stderr}");
    let (ok, _, stderr) = cli(&["memory", "neighbours", "Atlantis"]);
    assert!(!ok);
    assert!(stderr.contains("no entity"), "{stderr}");
}
