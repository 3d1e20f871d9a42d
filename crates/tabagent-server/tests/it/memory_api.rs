//! One suite, every memory backend: the embedded store in this process, the same store
//! served by `tabagent memory serve` in another process and reached over gRPC, and PostgreSQL
//! with pgvector (the cluster `scripts/test` starts). Each must answer alike, errors included.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;

use tabagent_memory::{
    Change, ConsolidateOptions, Embedding, EntityRef, Filter, LocalMemory, Memory, MemoryApi,
    MemoryConfig, MemoryError, Mode, NewEntity, NewRecord, NewRelation, Order, Outcome, PgMemory,
    SearchRequest, Store, WalkOptions,
};
use tabagent_memory_grpc::RemoteMemory;

use crate::server::tabagent;

fn record(text: &str) -> NewRecord {
    NewRecord {
        text: text.to_string(),
        ..Default::default()
    }
}

fn insert(store: Store, record: NewRecord) -> Change {
    Change::Insert { store, record }
}

fn inserted(outcome: &Outcome) -> i64 {
    match outcome {
        Outcome::Inserted { record } => record.id,
        other => panic!("not an insert: {other:?}"),
    }
}

fn name(n: &str) -> EntityRef {
    EntityRef::Name(n.to_string())
}

/// The behaviour every backend must have, on an empty memory.
async fn suite(api: &impl MemoryApi) {
    // Records: written atomically across stores, read by id and key, listed in pages.
    let outcomes = api
        .apply(vec![
            insert(
                Store::Knowledge,
                NewRecord {
                    key: Some("capital".into()),
                    tags: vec!["geo".into()],
                    data: serde_json::json!({"n": 1, "unicode": "Zürich ✓"}),
                    ..record("Lisbon is the capital of Portugal")
                },
            ),
            insert(
                Store::Conversations,
                NewRecord {
                    conversation: Some("c1".into()),
                    role: Some("user".into()),
                    ..record("What is the capital of Portugal?")
                },
            ),
            insert(Store::Experience, record("Restarting fixed the outage")),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    let capital = inserted(&outcomes[0]);
    let got = api.get(capital).await.unwrap();
    assert_eq!(got.text, "Lisbon is the capital of Portugal");
    assert_eq!(got.data["unicode"], "Zürich ✓");
    assert_eq!(got.tags, vec!["geo"]);
    let by_key = api
        .get_by_key(Store::Knowledge, "capital".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key, got);
    assert!(api
        .get_by_key(Store::Knowledge, "nothing".into())
        .await
        .unwrap()
        .is_none());
    let first = api
        .list(Filter::default(), Order::Oldest, 2, None)
        .await
        .unwrap();
    assert_eq!(first.records.len(), 2);
    let rest = api
        .list(Filter::default(), Order::Oldest, 2, first.next)
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 1);
    assert!(rest.next.is_none());
    let chat = api
        .list(
            Filter {
                conversation: Some("c1".into()),
                ..Default::default()
            },
            Order::Newest,
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(chat.records.len(), 1);
    assert_eq!(chat.records[0].role.as_deref(), Some("user"));

    // A group with a failing change leaves nothing.
    let err = api
        .apply(vec![
            insert(Store::Meta, record("never stored")),
            Change::Delete { id: 999_999 },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, MemoryError::NotFound(999_999)), "{err:?}");
    let stats = api.stats().await.unwrap();
    assert_eq!(stats.stores.iter().map(|s| s.records).sum::<u64>(), 3);

    // Vectors and hybrid search, with the reasons for each hit.
    let near = |x: f32| Embedding {
        space: "s3".into(),
        vector: vec![1.0, x, 0.0],
    };
    let with_vectors = api
        .apply(vec![
            insert(
                Store::Embeddings,
                NewRecord {
                    embedding: Some(near(0.0)),
                    ..record("alpha chunk about rivers")
                },
            ),
            insert(
                Store::Embeddings,
                NewRecord {
                    embedding: Some(near(5.0)),
                    ..record("beta chunk about mountains")
                },
            ),
        ])
        .await
        .unwrap();
    let alpha = inserted(&with_vectors[0]);
    let found = api
        .search(SearchRequest {
            text: Some("mountains".into()),
            vector: Some(near(0.1)),
            filter: Filter::default(),
            mode: Mode::Hybrid,
            limit: 5,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(found.hits.len(), 2);
    let top_vector = found
        .hits
        .iter()
        .find(|h| h.why.vector_rank == Some(1))
        .unwrap();
    assert_eq!(top_vector.record.id, alpha);
    assert!(found.hits.iter().any(|h| h.why.keyword_rank == Some(1)));
    assert!(found.vector_method.is_some());
    let err = api
        .search(SearchRequest {
            vector: Some(Embedding {
                space: "s3".into(),
                vector: vec![1.0, 2.0],
            }),
            mode: Mode::Vector,
            ..SearchRequest::keyword("x")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MemoryError::Dimensions { space, expected: 3, got: 2 } if space == "s3"),
        "{err:?}"
    );
    let err = api
        .list(Filter::default(), Order::Newest, 0, None)
        .await
        .unwrap_err();
    assert_eq!(err.param(), Some("limit"), "{err:?}");
    let err = api
        .list(
            Filter {
                since: Some(10),
                until: Some(5),
                ..Default::default()
            },
            Order::Newest,
            5,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.param(), Some("since"), "{err:?}");

    // The graph: entities by name and alias, relations citing evidence, walks, merges.
    let outcomes = api
        .apply(vec![
            Change::Entity {
                entity: NewEntity {
                    name: "Ada Lovelace".into(),
                    entity_type: Some("person".into()),
                    aliases: vec!["Countess".into()],
                    ..Default::default()
                },
            },
            Change::Relate {
                relation: NewRelation {
                    subject: name("countess"),
                    relation: "worked with".into(),
                    object: name("Charles Babbage"),
                    evidence: Some(capital),
                    source: None,
                    confidence: Some(0.5),
                },
            },
            Change::Relate {
                relation: NewRelation {
                    subject: name("Charles Babbage"),
                    relation: "designed".into(),
                    object: name("Analytical Engine"),
                    evidence: None,
                    source: Some("test".into()),
                    confidence: None,
                },
            },
            Change::Entity {
                entity: NewEntity {
                    name: "The Analytical Engine".into(),
                    ..Default::default()
                },
            },
        ])
        .await
        .unwrap();
    let Outcome::Related { relation } = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(relation.relation, "worked_with");
    assert_eq!(relation.evidence, Some(capital));
    assert_eq!(api.relation(relation.id).await.unwrap(), *relation);
    let ada = api.entity(name("ADA lovelace")).await.unwrap();
    assert_eq!(ada.aliases, vec!["Countess"]);
    let around = api
        .neighbourhood(EntityRef::Id(ada.id), 2, WalkOptions::default())
        .await
        .unwrap();
    let reached: Vec<(&str, u32)> = around
        .entities
        .iter()
        .map(|r| (r.entity.name.as_str(), r.hops))
        .collect();
    assert_eq!(
        reached,
        vec![
            ("Ada Lovelace", 0),
            ("Charles Babbage", 1),
            ("Analytical Engine", 2)
        ]
    );
    let path = api
        .shortest_path(
            name("Ada Lovelace"),
            name("analytical engine"),
            6,
            WalkOptions::default(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(path.relations.len(), 2);
    let none = api
        .shortest_path(
            name("analytical engine"),
            name("Ada Lovelace"),
            6,
            WalkOptions {
                direction: tabagent_memory::Direction::Out,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.is_none());
    let planned = api
        .duplicate_entities(ConsolidateOptions { similarity: None })
        .await
        .unwrap();
    assert_eq!(planned.len(), 1);
    let merged = api
        .consolidate(ConsolidateOptions { similarity: None })
        .await
        .unwrap();
    assert_eq!(merged, planned);
    let err = api.entity(name("Nobody")).await.unwrap_err();
    assert!(
        matches!(&err, MemoryError::EntityNotFound(n) if n.contains("Nobody")),
        "{err:?}"
    );
    let err = api.relation(424_242).await.unwrap_err();
    assert!(
        matches!(err, MemoryError::RelationNotFound(424_242)),
        "{err:?}"
    );
    let err = api
        .neighbourhood(name("Ada Lovelace"), 99, WalkOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.param(), Some("hops"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open(&MemoryConfig::at(dir.path())).unwrap();
    suite(&LocalMemory(Arc::new(memory))).await;
}

/// `tabagent memory serve` on a free port, stopped when dropped.
struct Service {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Service {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tabagent(dir.path())
            .args(["memory", "serve", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("tabagent memory serve exited before it listened");
            };
            if let Some(url) = line.strip_prefix("memory service listening on ") {
                break url.trim().to_string();
            }
        };
        Service {
            url,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_store_over_grpc_from_another_process_passes_the_suite() {
    let service = Service::start(&[]);
    let remote = RemoteMemory::connect(&service.url, None).await.unwrap();
    suite(&remote).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_service_refuses_calls_without_the_key() {
    const KEY: &str = "memory-key-0123456789";
    // A key shorter than 16 characters is refused, as the HTTP server's keys are.
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path())
        .args(["memory", "serve", "--port", "0", "--api-key", "k-123"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("16 characters"), "{stderr}");
    let service = Service::start(&["--api-key", KEY]);
    let anonymous = RemoteMemory::connect(&service.url, None).await.unwrap();
    let err = anonymous.stats().await.unwrap_err();
    assert!(
        matches!(&err, MemoryError::Unavailable(m) if m.contains("authorization")),
        "{err:?}"
    );
    let wrong = RemoteMemory::connect(&service.url, Some("memory-key-0123456780"))
        .await
        .unwrap();
    assert!(wrong.stats().await.is_err());
    let keyed = RemoteMemory::connect(&service.url, Some(KEY))
        .await
        .unwrap();
    assert_eq!(keyed.stats().await.unwrap().stores.len(), 7);

    // Off loopback without a key, the service will not start.
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path())
        .args(["memory", "serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API key"), "{stderr}");
    // A dead address is a clear error, not a hang.
    drop(service);
    let gone = RemoteMemory::connect("http://127.0.0.1:1", None)
        .await
        .unwrap_err();
    assert!(matches!(gone, MemoryError::Unavailable(_)), "{gone:?}");
}

/// Writes a fact through the server's HTTP API; returns the stored record.
async fn remember(server: &crate::server::Server, text: &str) -> serde_json::Value {
    let (status, body) = server
        .post_json("/v1/memory/knowledge", &serde_json::json!({ "text": text }))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn assert_no_memory_of_its_own(server: &crate::server::Server) {
    let own = server.data_dir().join("memory").join("memory.sqlite");
    assert!(!own.exists(), "the server keeps a memory of its own");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_switches_to_a_remote_memory_by_configuration() {
    let service = Service::start(&["--api-key", "remote-key-0123456789"]);
    let server = crate::server::Server::start_with(
        &[],
        &[
            ("TABAGENT_MEMORY__REMOTE", service.url.as_str()),
            ("TABAGENT_MEMORY__REMOTE_API_KEY", "remote-key-0123456789"),
        ],
        |_| {},
    );
    let body = remember(&server, "kept in another process").await;
    let (status, related) = server
        .post_json(
            "/v1/memory/graph/relations",
            &serde_json::json!({"subject": "Server", "relation": "uses", "object": "Remote"}),
        )
        .await;
    assert_eq!(status, 200, "{related}");
    let remote = RemoteMemory::connect(&service.url, Some("remote-key-0123456789"))
        .await
        .unwrap();
    let stored = remote.get(body["id"].as_i64().unwrap()).await.unwrap();
    assert_eq!(stored.text, "kept in another process");
    assert_eq!(remote.entity(name("remote")).await.unwrap().name, "Remote");
    assert_no_memory_of_its_own(&server);
    // With the service gone, memory calls say so (503); the rest of the server is unaffected.
    drop(service);
    let (status, body) = server
        .post_json(
            "/v1/memory/search",
            &serde_json::json!({"query": "kept", "mode": "keyword"}),
        )
        .await;
    assert_eq!(
        crate::server::assert_error(status, &body, 503)["code"],
        "memory_unavailable"
    );
    let (status, _) = server.get_json("/v1/models").await;
    assert_eq!(status, 200);
}

/// A new, empty database in the PostgreSQL cluster `scripts/test` starts
/// (`TABAGENT_TEST_POSTGRES_URL`); the cluster and all it holds go when the run ends.
pub(crate) async fn postgres_database() -> String {
    let admin = std::env::var("TABAGENT_TEST_POSTGRES_URL")
        .expect("TABAGENT_TEST_POSTGRES_URL is unset: scripts/test starts PostgreSQL and sets it");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_with_pgvector_passes_the_suite() {
    let url = postgres_database().await;
    let memory = PgMemory::connect(&url, Default::default()).await.unwrap();
    suite(&memory).await;
    // A second connection (another server) finds the schema in place and the same records.
    let again = PgMemory::connect(&url, Default::default()).await.unwrap();
    assert_eq!(
        again.entity(name("charles babbage")).await.unwrap().name,
        "Charles Babbage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refuses_what_it_cannot_store_and_keeps_names_unique_under_concurrency() {
    let url = postgres_database().await;
    let memory = PgMemory::connect(&url, Default::default()).await.unwrap();
    // NUL cannot be stored in PostgreSQL text: the caller hears why (a 400), nothing is written.
    let err = memory
        .insert(Store::Knowledge, record("a\0b"))
        .await
        .unwrap_err();
    assert_eq!(err.param(), Some("text"), "{err:?}");
    assert!(err.is_callers_fault());
    // 16 writers naming the same new entity at once: one entity, all relations on it.
    let writers = (0..16).map(|i| {
        let memory = memory.clone();
        tokio::spawn(async move {
            memory
                .relate(NewRelation {
                    subject: name("Shared Hub"),
                    relation: "links".into(),
                    object: name(&format!("leaf {i}")),
                    evidence: None,
                    source: None,
                    confidence: None,
                })
                .await
                .unwrap()
        })
    });
    let mut subjects = std::collections::HashSet::new();
    for writer in writers {
        subjects.insert(writer.await.unwrap().subject);
    }
    assert_eq!(subjects.len(), 1);
    let hub = memory
        .neighbourhood(name("shared hub"), 1, WalkOptions::default())
        .await
        .unwrap();
    assert_eq!(hub.entities.len(), 17);
    // Filtered vector search goes through the space's HNSW index and still finds the
    // nearest of the few records the filter allows.
    let mut changes = Vec::new();
    for i in 0..300 {
        changes.push(insert(
            Store::Embeddings,
            NewRecord {
                tags: if i % 100 == 0 {
                    vec!["rare".into()]
                } else {
                    vec![]
                },
                embedding: Some(Embedding {
                    space: "wide".into(),
                    vector: (0..8)
                        .map(|d| ((i * 7 + d * 13) % 17) as f32 + 0.5)
                        .collect(),
                }),
                ..record(&format!("vector {i}"))
            },
        ));
    }
    memory.apply(changes).await.unwrap();
    let found = memory
        .search(SearchRequest {
            text: None,
            vector: Some(Embedding {
                space: "wide".into(),
                vector: (0..8)
                    .map(|d| ((200 * 7 + d * 13) % 17) as f32 + 0.5)
                    .collect(),
            }),
            filter: Filter {
                tags: vec!["rare".into()],
                ..Default::default()
            },
            mode: Mode::Vector,
            limit: 3,
            offset: 0,
        })
        .await
        .unwrap();
    let texts: Vec<&str> = found.hits.iter().map(|h| h.record.text.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert_eq!(texts[0], "vector 200");
    assert_eq!(found.vector_method, Some("hnsw"));
    let stats = memory.stats().await.unwrap();
    assert_eq!(stats.spaces[0].indexed, 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_keeps_its_memory_in_postgres_by_configuration() {
    let url = postgres_database().await;
    let server = crate::server::Server::start_with(
        &[],
        &[("TABAGENT_MEMORY__POSTGRES", url.as_str())],
        |_| {},
    );
    let body = remember(&server, "kept in PostgreSQL").await;
    let (status, found) = server
        .post_json(
            "/v1/memory/search",
            &serde_json::json!({"query": "postgresql", "mode": "keyword"}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"][0]["record"]["id"], body["id"]);
    let direct = PgMemory::connect(&url, Default::default()).await.unwrap();
    let stored = direct.get(body["id"].as_i64().unwrap()).await.unwrap();
    assert_eq!(stored.text, "kept in PostgreSQL");
    assert_no_memory_of_its_own(&server);
    // The CLI follows the same configuration.
    let out = crate::server::tabagent(server.data_dir())
        .env("TABAGENT_MEMORY__POSTGRES", &url)
        .args(["memory", "get", &body["id"].to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept in PostgreSQL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_postgres_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path())
        .env(
            "TABAGENT_MEMORY__POSTGRES",
            "postgres://nobody:secret-pw@127.0.0.1:1/none",
        )
        .args(["memory", "stats"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("memory.postgres"), "{stderr}");
    assert!(
        !stderr.contains("secret-pw"),
        "the password leaked: {stderr}"
    );
}

/// `database`'s URL through the PgBouncer that `scripts/test` starts in front of the cluster,
/// which accepts TLS clients only, with `options` added.
fn through_tls_bouncer(database: &str, options: &str) -> String {
    let bouncer = std::env::var("TABAGENT_TEST_POSTGRES_TLS_URL").expect(
        "TABAGENT_TEST_POSTGRES_TLS_URL is unset: scripts/test starts PgBouncer and sets it",
    );
    let name = database.rsplit_once('/').unwrap().1;
    format!("{}/{name}{options}", bouncer.rsplit_once('/').unwrap().0)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verifies_the_servers_certificate_and_name() {
    let database = postgres_database().await;
    let ca = std::env::var("TABAGENT_TEST_POSTGRES_CA").unwrap();
    // The bouncer refuses clients in the clear, so a connection that works was encrypted.
    let plain = PgMemory::connect(
        &through_tls_bouncer(&database, "?sslmode=disable"),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(plain, MemoryError::Unavailable(_)), "{plain}");
    let verified = PgMemory::connect(
        &through_tls_bouncer(&database, &format!("?sslmode=verify-full&sslrootcert={ca}")),
        Default::default(),
    )
    .await
    .unwrap();
    let stored = verified
        .insert(Store::Knowledge, record("sent over TLS"))
        .await
        .unwrap();
    // Naming the CA is enough to ask for TLS, as with libpq; key=value pairs work too.
    let port = through_tls_bouncer(&database, "")
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let name = database.rsplit_once('/').unwrap().1;
    let pairs =
        format!("host=localhost port={port} user=tabagent dbname={name} sslrootcert='{ca}'");
    let again = PgMemory::connect(&pairs, Default::default()).await.unwrap();
    assert_eq!(again.get(stored.id).await.unwrap().text, "sent over TLS");

    // A server whose certificate no trusted CA signed is refused, and the error says what to do.
    let unknown = PgMemory::connect(
        &through_tls_bouncer(&database, "?sslmode=require"),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(unknown.to_string().contains("certificate"), "{unknown}");
    assert!(unknown.to_string().contains("sslrootcert"), "{unknown}");
    // So is a certificate for another name (the address is right, the name is not).
    let wrong_name = format!(
        "host=db.example.com hostaddr=127.0.0.1 port={port} user=tabagent dbname={name} \
         sslmode=verify-full sslrootcert={ca}"
    );
    let err = PgMemory::connect(&wrong_name, Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// The throwaway CA and localhost certificate `scripts/test` makes.
fn test_tls() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("TABAGENT_TEST_TLS_DIR")
            .expect("TABAGENT_TEST_TLS_DIR is unset: scripts/test makes a test CA and sets it"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_speaks_tls_and_its_clients_verify_it() {
    const KEY: &str = "tls-memory-key-0123456789";
    let tls = test_tls();
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let ca = std::fs::read(tls.join("ca.pem")).unwrap();
    let service = Service::start(&[
        "--api-key",
        KEY,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(service.url.starts_with("https://"), "{}", service.url);
    // Verified against the CA that signed it, under either name the certificate carries.
    for url in [
        service.url.clone(),
        service.url.replace("127.0.0.1", "localhost"),
    ] {
        let remote = RemoteMemory::connect_verified(&url, Some(KEY), Some(&ca))
            .await
            .unwrap();
        assert_eq!(remote.stats().await.unwrap().stores.len(), 7, "{url}");
    }
    // A certificate the system's roots do not vouch for is refused; so is plain HTTP.
    for (url, ca) in [
        (service.url.clone(), None),
        (service.url.replacen("https", "http", 1), None),
    ] {
        let failed = match RemoteMemory::connect_verified(&url, Some(KEY), ca).await {
            Ok(remote) => remote.stats().await.is_err(),
            Err(_) => true,
        };
        assert!(failed, "{url} answered without a verified certificate");
    }
    // Off loopback, the service wants TLS unless told `--insecure`.
    let dir = tempfile::tempdir().unwrap();
    let out = tabagent(dir.path())
        .args([
            "memory",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--api-key",
            KEY,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure") && stderr.contains("TLS"),
        "{stderr}"
    );
    let open = Service::start(&["--host", "0.0.0.0", "--api-key", KEY, "--insecure"]);
    assert!(open.url.starts_with("http://"), "{}", open.url);
    // A server keeps its memory there, over TLS, trusting the CA its configuration names.
    let server = crate::server::Server::start_with(
        &[],
        &[
            ("TABAGENT_MEMORY__REMOTE", service.url.as_str()),
            ("TABAGENT_MEMORY__REMOTE_API_KEY", KEY),
            (
                "TABAGENT_MEMORY__REMOTE_CA",
                tls.join("ca.pem").to_str().unwrap(),
            ),
        ],
        |_| {},
    );
    let body = remember(&server, "kept behind TLS").await;
    let remote = RemoteMemory::connect_verified(&service.url, Some(KEY), Some(&ca))
        .await
        .unwrap();
    let stored = remote.get(body["id"].as_i64().unwrap()).await.unwrap();
    assert_eq!(stored.text, "kept behind TLS");
}
