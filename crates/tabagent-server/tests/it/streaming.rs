use serde_json::{json, Value};

use crate::server::{assert_error, chat, Server, MODEL};

/// Reads server-sent events from a response, one `data:` payload at a time.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/event-stream"), "content-type {kind}");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's data, or `None` at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            let chunk = self.response.chunk().await.expect("body readable")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 body"));
        }
    }

    /// The next event as JSON; panics on `[DONE]`.
    pub async fn next_json(&mut self) -> Value {
        let data = self.next().await.expect("another event");
        serde_json::from_str(&data).unwrap_or_else(|_| panic!("not JSON: {data}"))
    }

    /// Everything up to `[DONE]`, as JSON chunks.
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut chunks = Vec::new();
        loop {
            let data = self.next().await.expect("the stream ended without [DONE]");
            if data == "[DONE]" {
                assert!(self.next().await.is_none(), "events after [DONE]");
                return chunks;
            }
            chunks.push(serde_json::from_str(&data).unwrap_or_else(|_| panic!("not JSON: {data}")));
        }
    }
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn streamed_chat_matches_the_unstreamed_answer_and_reports_usage() {
    let server = Server::start(&[]);
    let (status, whole) = server
        .post_json("/v1/chat/completions", &chat("Name two planets.", 24))
        .await;
    assert_eq!(status, 200, "{whole}");

    let mut body = chat("Name two planets.", 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut events = Events::new(server.post("/v1/chat/completions", &body).await);
    let chunks = events.rest().await;

    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], MODEL);
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        streamed_text(&chunks),
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, whole["choices"][0]["finish_reason"]);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
}

#[tokio::test]
async fn streamed_completion_ends_with_done() {
    let server = Server::start(&[]);
    let body = json!({"model": MODEL, "prompt": "One, two, three,", "max_tokens": 6, "temperature": 0, "stream": true});
    let chunks = Events::new(server.post("/v1/completions", &body).await)
        .rest()
        .await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

/// Starts an endless streamed chat and waits until it is generating (its first text arrived).
pub async fn generating(server: &Server, prompt: &str) -> Events {
    let mut events = Events::new(server.post("/v1/chat/completions", &endless(prompt)).await);
    let _role = events.next_json().await;
    let text = events.next_json().await;
    assert!(text["choices"][0]["delta"]["content"].is_string(), "{text}");
    events
}

pub fn endless(prompt: &str) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 100000,
        "ignore_eos": true,
        "stream": true
    })
}

#[tokio::test]
async fn two_streams_produce_tokens_at_the_same_time() {
    let server = Server::start(&["--parallel", "2", "--ctx-size", "2048"]);
    let mut a = Events::new(
        server
            .post("/v1/chat/completions", &endless("Count upwards."))
            .await,
    );
    let mut b = Events::new(
        server
            .post("/v1/chat/completions", &endless("List animals."))
            .await,
    );
    // Skip the role chunks, then take one text chunk from each.
    for events in [&mut a, &mut b] {
        let _role = events.next_json().await;
        let text = events.next_json().await;
        assert!(text["choices"][0]["delta"]["content"].is_string(), "{text}");
    }
    // Both are generating now, neither finished: each can run to ~2000 tokens.
    let model = server.model_health().await;
    assert_eq!(model["active"], 2, "{model}");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_generation() {
    let server = Server::start(&["--parallel", "1", "--ctx-size", "2048"]);
    let events = generating(&server, "Tell a story.").await;
    drop(events);
    // One slot: this request runs only after the endless one stops. Had it not been cancelled it
    // would run to the end of its 2048-token context and count as completed, not cancelled.
    let (status, body) = server
        .post_json("/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200, "{body}");
    let model = server.model_health().await;
    assert_eq!(model["cancelled_total"], 1, "{model}");
    assert_eq!(model["completed_total"], 1, "{model}");
}

#[tokio::test]
async fn a_client_that_disconnects_while_queued_is_never_run() {
    let server = Server::start(&["--parallel", "1", "--ctx-size", "2048"]);
    let running = generating(&server, "Tell a story.").await;
    // Headers and the role chunk of a queued request come back before it gets the slot.
    let mut queued = Events::new(
        server
            .post("/v1/chat/completions", &endless("Another story."))
            .await,
    );
    let _role = queued.next_json().await;
    assert_eq!(server.model_health().await["queued"], 1);
    drop(queued);
    drop(running);
    // Had the queued request survived its client, it would take the slot next and run its whole
    // context before this one, and count as completed.
    let (status, body) = server
        .post_json("/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200, "{body}");
    let model = server.model_health().await;
    assert_eq!(model["cancelled_total"], 2, "{model}");
    assert_eq!(model["completed_total"], 1, "{model}");
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = Server::start(&["--parallel", "1", "--queue-capacity", "1"]);
    let _running = generating(&server, "Tell a story.").await;
    // Headers of a streamed response come back once the request is queued.
    let waiting = server
        .post("/v1/chat/completions", &endless("Another story."))
        .await;
    assert_eq!(waiting.status(), 200);
    let turned_away = server.post("/v1/chat/completions", &chat("Hi", 2)).await;
    assert_eq!(turned_away.status(), 503);
    let retry_after: u64 = turned_away.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = turned_away.json().await.unwrap();
    let error = assert_error(503, &body, 503);
    assert_eq!(error["code"], "server_busy");
}
