//! `/v1/documents` and `tabagent ingest`: real documents (tests/corpus/documents), PDFium from
//! the pypdfium2 wheel, passages embedded by the real all-MiniLM-L6-v2, found by meaning with
//! their page.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::server::{assert_error, minilm_dir, tabagent, Server};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corpus/documents")
        .join(name)
}

/// A server whose memory embeds with MiniLM, reading documents in `folder` (when given).
fn start(folder: Option<&Path>) -> Server {
    let dir = minilm_dir();
    let folders = folder.map(|f| format!("[\"{}\"]", f.display()));
    let mut env = vec![
        (
            "TABAGENT_MODELS__DIRECTORIES__MINILM",
            dir.to_str().unwrap(),
        ),
        ("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm"),
        ("TABAGENT_LIBRARIAN__MAX_FILE_BYTES", "100000"),
    ];
    if let Some(folders) = &folders {
        env.push(("TABAGENT_LIBRARIAN__FOLDERS", folders.as_str()));
    }
    Server::start_with(&[], &env, |_| {})
}

async fn upload(server: &Server, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    let response = server
        .client
        .post(server.endpoint("/v1/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn an_uploaded_pdf_answers_a_paraphrased_question_with_its_page() {
    let server = start(None);
    let pdf = std::fs::read(corpus("orchard-handbook.pdf")).unwrap();
    let (status, doc) = upload(&server, "orchard-handbook.pdf", pdf.clone()).await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(
        (doc["object"].as_str(), doc["outcome"].as_str()),
        (Some("document"), Some("added"))
    );
    assert_eq!(
        (doc["pages"].as_u64(), doc["status"].as_str()),
        (Some(3), Some("ready"))
    );
    assert_eq!(doc["format"], "pdf");
    assert_eq!(doc["title"], "Orchard Handbook");
    let id = doc["id"].as_str().unwrap().to_string();

    // Words the passage does not use: found by meaning, cited with its page.
    for (question, page, words) in [
        ("when are quinces ready to pick?", 3, "golden yellow"),
        (
            "how much should I irrigate a young pear?",
            2,
            "twenty litres",
        ),
        (
            "what season do you cut back apple branches?",
            1,
            "late winter",
        ),
    ] {
        let (status, found) = server
            .post_json(
                "/v1/memory/search",
                &json!({"query": question, "stores": ["knowledge"], "limit": 3}),
            )
            .await;
        assert_eq!(status, 200, "{found}");
        let best = &found["data"][0];
        assert!(
            best["record"]["text"].as_str().unwrap().contains(words),
            "{question}: {found}"
        );
        let source = &best["sources"][0];
        assert_eq!(
            (source["document"].as_str(), source["page"].as_u64()),
            (Some(id.as_str()), Some(page)),
            "{question}: {best}"
        );
        assert_eq!(source["name"], "orchard-handbook.pdf");
        assert!(best["why"]["vector_rank"].is_number(), "{best}");
    }

    // A chat grounded in the memory numbers the passages and lists their sources.
    let response = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("x-tabagent-context", "memory")
        .json(
            &json!({"model": "smollm2", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "When do quinces ripen?"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records: usize = response.headers()["x-tabagent-context-records"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let sources = answer["sources"].as_array().unwrap();
    assert!(!sources.is_empty() && records >= 1, "{answer}");
    let quince = sources
        .iter()
        .find(|s| s["page"] == 3)
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(
        (quince["document"].as_str(), quince["name"].as_str()),
        (Some(id.as_str()), Some("orchard-handbook.pdf"))
    );
    assert!(quince["index"].as_u64().unwrap() as usize <= records);
    // Streamed, the sources come with the finish reason.
    let streamed = server
        .client
        .post(server.endpoint("/v1/chat/completions"))
        .header("x-tabagent-context", "memory")
        .json(&json!({"model": "smollm2", "max_tokens": 8, "stream": true,
                      "messages": [{"role": "user", "content": "When do quinces ripen?"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finishing: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .collect();
    assert_eq!(finishing.len(), 1, "{streamed}");
    assert_eq!(finishing[0]["sources"], answer["sources"], "{streamed}");
    assert_eq!(
        chunks.iter().filter(|c| c.get("sources").is_some()).count(),
        1
    );

    // The same file again is the same document.
    let (status, again) = upload(&server, "handbook-copy.pdf", pdf).await;
    assert_eq!(
        (status, again["outcome"].as_str(), again["id"].as_str()),
        (200, Some("unchanged"), Some(id.as_str()))
    );

    let (status, list) = server.get_json("/v1/documents").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, shown) = server
        .get_json(&format!("/v1/documents/{id}?passages=true"))
        .await;
    assert_eq!(status, 200, "{shown}");
    let passages = shown["passages"].as_array().unwrap();
    assert_eq!(passages.len() as u64, shown["chunks"].as_u64().unwrap());
    assert_eq!(passages[0]["page"], 1);
    assert!(passages[0]["text"]
        .as_str()
        .unwrap()
        .contains("Pruning apple trees"));

    let (status, removed) = server.delete_json(&format!("/v1/documents/{id}")).await;
    assert_eq!((status, removed["id"].as_str()), (200, Some(id.as_str())));
    let (status, body) = server.get_json(&format!("/v1/documents/{id}")).await;
    assert_error(status, &body, 404);
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "quinces", "stores": ["knowledge"]}),
        )
        .await;
    assert_eq!(
        found["data"].as_array().unwrap().len(),
        0,
        "its passages went with it: {found}"
    );
}

#[tokio::test]
async fn documents_that_cannot_be_read_get_clear_errors_and_leave_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let folder_path = folder.path().canonicalize().unwrap();
    std::fs::copy(
        corpus("beekeeping.docx"),
        folder_path.join("beekeeping.docx"),
    )
    .unwrap();
    let server = start(Some(&folder_path));
    for (name, code) in [
        ("encrypted.pdf", "encrypted_document"),
        ("scanned-letter.pdf", "no_text_layer"),
        ("truncated.pdf", "malformed_document"),
    ] {
        let (status, body) = upload(&server, name, std::fs::read(corpus(name)).unwrap()).await;
        assert_eq!(
            assert_error(status, &body, 422)["code"],
            code,
            "{name}: {body}"
        );
    }
    let (status, body) = upload(&server, "tune.mp3", b"ID3\x04\x00".to_vec()).await;
    assert_eq!(
        assert_error(status, &body, 422)["code"],
        "unsupported_document"
    );
    let (status, body) = upload(&server, "big.txt", vec![b'a'; 100_001]).await;
    assert_eq!(
        assert_error(status, &body, 422)["code"],
        "document_too_large"
    );
    // A path: only inside librarian.folders, links resolved first.
    std::os::unix::fs::symlink("/etc/passwd", folder_path.join("passwd.txt")).unwrap();
    for path in [
        "/etc/passwd".to_string(),
        format!("{}/../../etc/passwd", folder_path.display()),
        format!("{}/passwd.txt", folder_path.display()),
        "relative/notes.md".to_string(),
        format!("{}/missing.md", folder_path.display()),
    ] {
        let (status, body) = server
            .post_json("/v1/documents", &json!({"path": path}))
            .await;
        assert_eq!(
            assert_error(status, &body, 400)["param"],
            "path",
            "{path}: {body}"
        );
    }
    let (_, list) = server.get_json("/v1/documents").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".pdf") || *n == "passwd.txt"),
        "{list}"
    );
    // A file inside the folder is read when named.
    let (status, doc) = server
        .post_json(
            "/v1/documents",
            &json!({"path": folder_path.join("beekeeping.docx")}),
        )
        .await;
    assert!(status == 201 || status == 200, "{doc}");
    assert_eq!(doc["format"], "docx");
    assert_eq!(doc["status"], "ready");
    let (status, body) = server
        .delete_json("/v1/documents/doc_0000000000000000")
        .await;
    assert_error(status, &body, 404);
}

#[test]
fn the_cli_reads_a_folder_lists_and_removes() {
    let data = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    for name in ["orchard-handbook.pdf", "composting.odt", "encrypted.pdf"] {
        std::fs::copy(corpus(name), folder.path().join(name)).unwrap();
    }
    let run = |args: &[&str]| {
        tabagent(data.path())
            .args(args)
            .env("TABAGENT_MODELS__DIRECTORIES__MINILM", minilm_dir())
            .env("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm")
            .output()
            .unwrap()
    };
    let out = run(&["ingest", "--json", folder.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one document fails: {stdout} {stderr}"
    );
    assert!(
        stderr.contains("error: 1 document(s) could not be read"),
        "{stderr}"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let failed = lines.iter().find(|l| l["error"].is_string()).unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("encrypted"),
        "{failed}"
    );
    let pdf = lines.iter().find(|l| l["format"] == "pdf").unwrap();
    assert_eq!(
        (pdf["pages"].as_u64(), pdf["outcome"].as_str()),
        (Some(3), Some("added"))
    );
    // Again: nothing to do.
    let out = run(&[
        "ingest",
        "--json",
        folder.path().join("orchard-handbook.pdf").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["outcome"], "unchanged");
    // A file that failed fails again, not read as done.
    let out = run(&[
        "ingest",
        folder.path().join("encrypted.pdf").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("encrypted"));
    // The memory CLI finds its words.
    let out = run(&["memory", "search", "compost heap"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every two weeks"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&["ingest", "--list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("ready")).count(),
        2,
        "{listed}"
    );
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("failed")).count(),
        1,
        "{listed}"
    );
    let out = run(&["ingest", "--remove", pdf["id"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["ingest", "--remove", pdf["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no document"));
}

#[tokio::test]
async fn an_imported_embedding_model_makes_the_memory_hybrid_by_default() {
    // Without it: keyword search, said at start.
    let server = Server::start_with(&[], &[], |_| {});
    let (_, stats) = server.get_json("/v1/memory").await;
    assert!(stats["embedding_model"].is_null(), "{stats}");
    assert!(
        server
            .log()
            .contains("default embedding model is not installed"),
        "{}",
        server.log()
    );
    drop(server);
    // Imported under the default name (as scripts/setup does): hybrid with no configuration.
    let server = Server::start_with(&[], &[], |data| {
        let import = || {
            tabagent(data)
                .args([
                    "import",
                    minilm_dir().to_str().unwrap(),
                    "--name",
                    "all-minilm-l6-v2",
                ])
                .output()
                .unwrap()
        };
        let out = import();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout)
            .starts_with("imported all-minilm-l6-v2 (embedding model"));
        // A second import under the same name is refused, the first kept.
        let again = import();
        assert_eq!(again.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    });
    let (_, stats) = server.get_json("/v1/memory").await;
    assert_eq!(stats["embedding_model"], "all-minilm-l6-v2", "{stats}");
    for note in [
        "The boiler service is booked for the third of March.",
        "Our cat Miso only eats the salmon flavour.",
    ] {
        let (status, _) = server
            .post_json("/v1/memory/knowledge", &json!({"text": note}))
            .await;
        assert_eq!(status, 201);
    }
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "what food does the pet like?"}),
        )
        .await;
    assert!(
        found["data"][0]["record"]["text"]
            .as_str()
            .unwrap()
            .contains("salmon"),
        "{found}"
    );
    assert!(
        found["data"][0]["why"]["vector_rank"].is_number(),
        "{found}"
    );
}

/// Server-sent events from `/v1/documents/events`, one JSON object each.
struct Events {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Events {
    async fn open(server: &Server) -> Events {
        use futures_util::StreamExt as _;
        let response = server
            .client
            .get(server.endpoint("/v1/documents/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let stream = response
            .bytes_stream()
            .map(|r| r.map(|b| b.to_vec()))
            .boxed();
        Events {
            stream,
            buffer: String::new(),
        }
    }

    /// The next event; a minute without one fails the test (a guard, not a wait).
    async fn next(&mut self) -> Value {
        use futures_util::StreamExt as _;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return serde_json::from_str(&data).unwrap();
            }
            let chunk =
                tokio::time::timeout(std::time::Duration::from_secs(60), self.stream.next())
                    .await
                    .expect("an event within a minute")
                    .expect("the stream is open")
                    .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one of `kind`, skipping files found unchanged.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] == kind {
                return event;
            }
        }
    }
}

/// A server following `folder`, over the data directory `data` (kept across restarts).
fn follow(folder: &Path, data: &Path) -> Server {
    let minilm = minilm_dir();
    let folders = format!("[\"{}\"]", folder.display());
    Server::start_in(
        data,
        &[],
        &[
            (
                "TABAGENT_MODELS__DIRECTORIES__MINILM",
                minilm.to_str().unwrap(),
            ),
            ("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm"),
            ("TABAGENT_WORKER__MODE", "off"),
            ("TABAGENT_LIBRARIAN__FOLDERS", folders.as_str()),
        ],
    )
}

#[tokio::test]
async fn a_followed_folder_stays_in_the_memory_across_drops_edits_deletes_and_restarts() {
    let data = tempfile::tempdir().unwrap();
    crate::server::import(
        data.path(),
        &crate::server::smollm2_path(),
        crate::server::MODEL,
    );
    let folder = tempfile::tempdir().unwrap();
    let folder_path = folder.path().canonicalize().unwrap();
    std::fs::copy(
        corpus("orchard-handbook.pdf"),
        folder_path.join("orchard.pdf"),
    )
    .unwrap();
    let server = follow(&folder_path, data.path());
    let mut events = Events::open(&server).await;
    // The first event says where the scan stands; if it is not done, its end is announced.
    let status = events.next().await;
    assert_eq!(status["type"], "status", "{status}");
    assert_eq!(status["following"][0], folder_path.to_str().unwrap());
    if status["scanned"] != true {
        events.until("scanned").await;
    }
    let (_, list) = server.get_json("/v1/documents").await;
    assert_eq!(list["data"][0]["name"], "orchard.pdf", "{list}");
    assert_eq!(list["data"][0]["pages"], 3);

    // Dropped in: read, and found by meaning.
    std::fs::copy(corpus("beekeeping.docx"), folder_path.join("bees.docx")).unwrap();
    let added = events.until("ingested").await;
    assert_eq!(
        (
            added["outcome"].as_str(),
            added["document"]["name"].as_str()
        ),
        (Some("added"), Some("bees.docx")),
        "{added}"
    );
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "how often to check the hives", "stores": ["knowledge"], "limit": 1}),
        )
        .await;
    assert_eq!(
        found["data"][0]["sources"][0]["name"], "bees.docx",
        "{found}"
    );
    // Deleted: gone from the memory.
    std::fs::remove_file(folder_path.join("bees.docx")).unwrap();
    let removed = events.until("removed").await;
    assert_eq!(removed["document"]["name"], "bees.docx");
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "hives", "mode": "keyword", "stores": ["knowledge"]}),
        )
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 0, "{found}");

    // Stopped, the folder changes; started again, the scan catches up.
    drop(events);
    drop(server);
    std::fs::write(
        folder_path.join("orchard.pdf"),
        std::fs::read(corpus("composting.odt")).unwrap(),
    )
    .unwrap();
    std::fs::rename(
        folder_path.join("orchard.pdf"),
        folder_path.join("compost.odt"),
    )
    .unwrap();
    std::fs::write(
        folder_path.join("new.md"),
        "# Ladders\n\nStore the orchard ladder flat in the barn.",
    )
    .unwrap();
    let server = follow(&folder_path, data.path());
    let mut events = Events::open(&server).await;
    if events.next().await["scanned"] != true {
        events.until("scanned").await;
    }
    let (_, list) = server.get_json("/v1/documents").await;
    let mut names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["compost.odt", "new.md"], "{list}");
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "quinces", "mode": "keyword", "stores": ["knowledge"]}),
        )
        .await;
    assert_eq!(
        found["data"].as_array().unwrap().len(),
        0,
        "the old file's passages went: {found}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_live_in_postgresql_as_well() {
    let url = crate::memory_api::postgres_database().await;
    let server = Server::start_with(
        &[],
        &[
            (
                "TABAGENT_MODELS__DIRECTORIES__MINILM",
                minilm_dir().to_str().unwrap(),
            ),
            ("TABAGENT_MEMORY__EMBEDDING_MODEL", "minilm"),
            ("TABAGENT_MEMORY__POSTGRES", url.as_str()),
        ],
        |_| {},
    );
    let (status, doc) = upload(
        &server,
        "orchard-handbook.pdf",
        std::fs::read(corpus("orchard-handbook.pdf")).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    let id = doc["id"].as_str().unwrap().to_string();
    let shared = "All visitors must sign in at the front desk and wear their badge at all times.";
    let (_, first) = upload(&server, "rules.txt", shared.as_bytes().to_vec()).await;
    let (_, second) = upload(
        &server,
        "rules-copy.txt",
        format!("{shared}\n").into_bytes(),
    )
    .await;
    let (_, found) = server
        .post_json("/v1/memory/search", &json!({"query": "when are quinces ready to pick?", "stores": ["knowledge"], "limit": 1}))
        .await;
    assert_eq!(found["data"][0]["sources"][0]["page"], 3, "{found}");
    // Listed a page at a time, newest first.
    let (_, page) = server.get_json("/v1/documents?limit=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(
        (page["has_more"].as_bool(), page["data"][0]["id"].as_str()),
        (Some(true), second["id"].as_str())
    );
    let (_, rest) = server
        .get_json(&format!(
            "/v1/documents?limit=2&after={}",
            page["last_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (rest["data"][0]["id"].as_str(), rest["has_more"].as_bool()),
        (Some(id.as_str()), Some(false)),
        "{rest}"
    );
    let (status, body) = server.get_json("/v1/documents?limit=0").await;
    assert_eq!(assert_error(status, &body, 400)["param"], "limit");
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "visitors badge", "mode": "keyword", "stores": ["knowledge"]}),
        )
        .await;
    let hits = found["data"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "one passage for both documents: {found}");
    assert_eq!(hits[0]["sources"].as_array().unwrap().len(), 2, "{found}");
    let (status, _) = server
        .delete_json(&format!("/v1/documents/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "visitors badge", "mode": "keyword", "stores": ["knowledge"]}),
        )
        .await;
    assert_eq!(
        found["data"][0]["sources"][0]["document"], second["id"],
        "{found}"
    );
    let (status, _) = server.delete_json(&format!("/v1/documents/{id}")).await;
    assert_eq!(status, 200);
    let (_, found) = server
        .post_json(
            "/v1/memory/search",
            &json!({"query": "quinces", "mode": "keyword", "stores": ["knowledge"]}),
        )
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 0, "{found}");
}
