//! Events out and jobs in through Redis Streams (`[events]`), with a real Redis and consumers in
//! other processes (`redis-cli`): memory writes and chat turns reach a consumer group and are
//! acknowledged there; events written while Redis is down wait in the outbox, through a kill of
//! tabagent, until Redis is back; ingestion jobs from another process are done, answered and
//! acknowledged, bad ones refused with a reason.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use tabagent_testhub::engine::{Behaviour, FakeEngine};

use crate::cache::Redis;
use crate::server::{import, smollm2_path, Server, MODEL};

/// `redis-cli` (another process) against `redis`, its reply as JSON.
pub fn redis_cli_json(redis: &Redis, args: &[&str]) -> Value {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--json"])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools, installed with redis-server)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("redis-cli {args:?}: {text}"))
}

/// An entry as the events publisher writes it: its stream id, `type`, `event_id` and `data`.
#[derive(Debug)]
struct Entry {
    id: String,
    kind: String,
    data: Value,
}

/// The entries of a single-stream `XREAD`/`XREADGROUP` reply (none when it timed out).
fn entries(reply: &Value, stream: &str) -> Vec<Entry> {
    let Some(list) = reply.get(stream).and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|entry| {
            let fields: Vec<&str> = entry[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let field = |name: &str| {
                let at = fields.iter().position(|f| *f == name).unwrap();
                fields[at + 1].to_string()
            };
            assert!(field("event_id").parse::<i64>().is_ok(), "{entry}");
            Entry {
                id: entry[0].as_str().unwrap().to_string(),
                kind: field("type"),
                data: serde_json::from_str(&field("data")).unwrap(),
            }
        })
        .collect()
}

/// Reads `stream` from after `from` until an entry satisfies `wanted` (each read blocks in
/// Redis until something arrives, up to 30 s).
fn read_until(redis: &Redis, stream: &str, wanted: impl Fn(&Entry) -> bool) -> Vec<Entry> {
    let mut seen = Vec::new();
    let mut from = "0".to_string();
    for _ in 0..50 {
        let reply = redis_cli_json(
            redis,
            &["XREAD", "BLOCK", "30000", "STREAMS", stream, &from],
        );
        let got = entries(&reply, stream);
        assert!(
            !got.is_empty(),
            "nothing arrived on {stream}; seen: {seen:?}"
        );
        from = got.last().unwrap().id.clone();
        let done = got.iter().any(&wanted);
        seen.extend(got);
        if done {
            return seen;
        }
    }
    panic!("the wanted entry never arrived on {stream}: {seen:?}");
}

/// Reads `tabagent:memory` in consumer group `group` until a memory write has a change that
/// `wanted` picks; that change.
pub fn wait_for_insert(redis: &Redis, group: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let reply = redis_cli_json(
            redis,
            &[
                "XREADGROUP",
                "GROUP",
                group,
                "c",
                "COUNT",
                "10",
                "BLOCK",
                "30000",
                "STREAMS",
                "tabagent:memory",
                ">",
            ],
        );
        let got = entries(&reply, "tabagent:memory");
        assert!(!got.is_empty(), "no memory write arrived; seen: {seen:?}");
        for entry in got {
            let changes = entry.data["changes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(change) = changes
                .into_iter()
                .find(|c| c["op"] == "insert" && wanted(c))
            {
                return change;
            }
            seen.push(entry);
        }
    }
    panic!("the wanted write never arrived: {seen:?}");
}

fn write_config(dir: &Path, redis: &Redis, extra: &str) -> std::path::PathBuf {
    let path = dir.join("tabagent.toml");
    std::fs::write(
        &path,
        format!("[events]\nredis_url = \"{}\"\n{extra}", redis.url),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_writes_and_chat_turns_reach_a_consumer_group_in_another_process() {
    let redis = Redis::start();
    let engine = FakeEngine::start(vec![Behaviour::Answer(vec!["streamed ", "reply"])])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &redis,
        &format!(
            "[[router.providers]]\nname = \"up\"\nbase_url = \"{}\"\nmodels = [\"m\"]\n",
            engine.base_url
        ),
    );
    // A consumer's groups, made before anything is published.
    for stream in ["tabagent:memory", "tabagent:chat"] {
        let made = redis_cli_json(
            &redis,
            &["XGROUP", "CREATE", stream, "readers", "$", "MKSTREAM"],
        );
        assert_eq!(made, "OK");
    }
    let server = Server::start(&["--config", config.to_str().unwrap()]);

    let (status, record) = server
        .post_json(
            "/v1/memory/knowledge",
            &json!({"text": "The orchard's quinces ripen in October.", "key": "quince"}),
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let (status, _) = server
        .delete_json(&format!("/v1/memory/knowledge/{}", record["id"]))
        .await;
    assert_eq!(status, 200);

    let read_group = |stream: &str| {
        redis_cli_json(
            &redis,
            &[
                "XREADGROUP",
                "GROUP",
                "readers",
                "c1",
                "COUNT",
                "10",
                "BLOCK",
                "30000",
                "STREAMS",
                stream,
                ">",
            ],
        )
    };
    let mut writes = entries(&read_group("tabagent:memory"), "tabagent:memory");
    if writes.len() < 2 {
        writes.extend(entries(&read_group("tabagent:memory"), "tabagent:memory"));
    }
    let ops: Vec<(String, Value)> = writes
        .iter()
        .flat_map(|entry| {
            assert_eq!(entry.kind, "memory.write");
            entry.data["changes"].as_array().unwrap().clone()
        })
        .map(|change| (change["op"].as_str().unwrap().to_string(), change))
        .collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(ops[0].0, "insert");
    assert_eq!(ops[0].1["id"], record["id"]);
    assert_eq!(ops[0].1["store"], "knowledge");
    assert_eq!(ops[0].1["key"], "quince");
    assert_eq!(ops[1].0, "delete");
    assert_eq!(ops[1].1["id"], record["id"]);
    // Acknowledged by the consumer, nothing is pending in its group.
    let ids: Vec<&str> = writes.iter().map(|e| e.id.as_str()).collect();
    let mut ack = vec!["XACK", "tabagent:memory", "readers"];
    ack.extend(&ids);
    assert_eq!(redis_cli_json(&redis, &ack), json!(ids.len()));
    let pending = redis_cli_json(&redis, &["XPENDING", "tabagent:memory", "readers"]);
    assert_eq!(pending[0], 0, "{pending}");

    let (status, answer) = server
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "Say something."}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let turns = entries(&read_group("tabagent:chat"), "tabagent:chat");
    assert_eq!(turns.len(), 1, "{turns:?}");
    let turn = &turns[0];
    assert_eq!(turn.kind, "chat.turn");
    assert_eq!(turn.data["model"], "m");
    assert_eq!(turn.data["provider"], "up");
    assert_eq!(turn.data["reply"], "streamed reply");
    assert_eq!(
        turn.data["messages"],
        json!([{"role": "user", "content": "Say something."}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_written_while_redis_is_down_arrive_when_it_is_back_even_after_a_kill() {
    let redis = Redis::start();
    let port = redis.port();
    let data_dir = tempfile::tempdir().unwrap();
    import(data_dir.path(), &smollm2_path(), MODEL);
    let config = write_config(data_dir.path(), &redis, "");
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start_in(data_dir.path(), &args, &[]);
    let write = |text: &'static str| {
        let server = &server;
        async move {
            let (status, record) = server
                .post_json("/v1/memory/knowledge", &json!({"text": text}))
                .await;
            assert_eq!(status, 201, "{record}");
            record["id"].clone()
        }
    };
    let inserted = |id: &Value| {
        let id = id.clone();
        move |entry: &Entry| {
            entry.data["changes"]
                .as_array()
                .is_some_and(|changes| changes.iter().any(|c| c["op"] == "insert" && c["id"] == id))
        }
    };
    let before = write("Written while Redis is up.").await;
    read_until(&redis, "tabagent:memory", inserted(&before));

    let mut redis = redis;
    redis.kill();
    // Acknowledged by tabagent while Redis is away; then tabagent itself is killed.
    let while_down = write("Written while Redis is down.").await;
    server.kill();

    let redis = Redis::start_on(port);
    let server = Server::start_in(data_dir.path(), &args, &[]);
    let seen = read_until(&redis, "tabagent:memory", inserted(&while_down));
    // The new Redis holds only what waited in the outbox.
    assert!(!seen.iter().any(inserted(&before)), "{seen:?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingestion_jobs_from_another_process_are_done_answered_and_acknowledged() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("papers");
    std::fs::create_dir(&folder).unwrap();
    let note = folder.join("hives.md");
    std::fs::write(
        &note,
        "# Hives\n\nA strong colony needs its hive inspected every nine days in spring.\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &redis,
        &format!(
            "[librarian]\nfolders = [\"{}\"]\nwatch = false\n[memory]\nembedding_model = \"\"\n",
            folder.display()
        ),
    );
    let xadd = |fields: &[&str]| {
        let mut args = vec!["XADD", "tabagent:ingest-jobs", "*"];
        args.extend(fields);
        redis_cli_json(&redis, &args).as_str().unwrap().to_string()
    };
    // Sent before tabagent runs: taken all the same.
    let good = xadd(&["path", note.to_str().unwrap()]);
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let outside = xadd(&["path", "/etc/hostname"]);
    let no_path = xadd(&["file", "hives.md"]);

    let results = read_until(&redis, "tabagent:ingestion", |entry| {
        entry.data["job"] == no_path.as_str()
    });
    let result = |job: &str| {
        results
            .iter()
            .find(|entry| entry.data["job"] == job)
            .unwrap_or_else(|| panic!("no result for {job}: {results:?}"))
    };
    let done = result(&good);
    assert_eq!(done.kind, "job.done", "{done:?}");
    assert_eq!(done.data["result"]["outcome"], "added", "{done:?}");
    let document = done.data["result"]["document"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = result(&outside);
    assert_eq!(refused.kind, "job.failed");
    assert!(
        refused.data["error"]
            .as_str()
            .unwrap()
            .contains("inside one of librarian.folders"),
        "{refused:?}"
    );
    let malformed = result(&no_path);
    assert_eq!(malformed.kind, "job.failed");
    assert!(
        malformed.data["error"]
            .as_str()
            .unwrap()
            .contains("`path` field"),
        "{malformed:?}"
    );
    // The document was also told as a librarian event, and is there.
    assert!(
        results.iter().any(|e| e.kind == "document.ingested"),
        "{results:?}"
    );
    let (status, listed) = server.get_json("/v1/documents").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], document.as_str(), "{listed}");
    // Jobs are done one after another and each acknowledged before the next is read: with the
    // last one answered, the first two are no longer pending.
    let pending = redis_cli_json(
        &redis,
        &[
            "XPENDING",
            "tabagent:ingest-jobs",
            "tabagent",
            "-",
            "+",
            "10",
        ],
    );
    let pending: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert!(
        !pending.contains(&good.as_str()) && !pending.contains(&outside.as_str()),
        "{pending:?}"
    );
}
