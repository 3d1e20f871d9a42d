//! A fake OpenAI-compatible engine on a real loopback socket, for injecting faults into
//! routers and proxies: each request takes the next scripted behaviour (the last one repeats).
//! It counts requests and records the model each asked for, so a test can tell what was sent
//! where (and that nothing was sent twice).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures_util::StreamExt;

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Streams these pieces, then a finish and usage.
    Answer(Vec<&'static str>),
    /// Answers with this status and an OpenAI-style error.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RateLimited(u64),
    /// Streams these pieces, then drops the connection when [`FakeEngine::break_stream`] says.
    DropAfter(Vec<&'static str>),
    /// Says nothing until the client gives up.
    Stall,
    /// Every other request (the 1st, 3rd, ...) answers 500; the rest answer these pieces.
    Flaky(Vec<&'static str>),
    /// Waits this many milliseconds before the first byte, then answers these pieces.
    Slow(u64, Vec<&'static str>),
    /// Streams these pieces, then holds the stream open until [`FakeEngine::release`] says,
    /// then finishes it.
    Held(Vec<&'static str>),
    /// Calls the tool named first with the arguments in the pieces that follow (streamed as
    /// OpenAI does: the id, type and name, then the arguments piece by piece, each token with
    /// its log probability when asked), finishing with `tool_calls`.
    CallTool(Vec<&'static str>),
    /// Answers these pieces as one `application/json` body even when asked to stream (some
    /// OpenAI-compatible servers ignore `stream: true`).
    Whole(Vec<&'static str>),
}

#[derive(Default)]
struct Script {
    behaviours: Mutex<VecDeque<Behaviour>>,
    requests: AtomicUsize,
    answered: AtomicUsize,
    models: Mutex<Vec<String>>,
    bodies: Mutex<Vec<serde_json::Value>>,
    traceparents: Mutex<Vec<Option<String>>>,
    break_stream: tokio::sync::Notify,
    release: tokio::sync::Notify,
    cancelled: AtomicUsize,
    open_streams: AtomicUsize,
}

/// A running fake.
pub struct FakeEngine {
    /// Its base URL (`http://127.0.0.1:PORT/v1`).
    pub base_url: String,
    script: Arc<Script>,
}

impl FakeEngine {
    /// Starts a fake that behaves as `behaviours` say, in order.
    pub async fn start(behaviours: Vec<Behaviour>) -> std::io::Result<FakeEngine> {
        Self::start_on(0, behaviours).await
    }

    /// [`FakeEngine::start`] on `port` of 127.0.0.1 (0: any free one).
    pub async fn start_on(port: u16, behaviours: Vec<Behaviour>) -> std::io::Result<FakeEngine> {
        let script = Arc::new(Script {
            behaviours: Mutex::new(behaviours.into()),
            ..Script::default()
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(complete))
            .route("/v1/models", get(list_models))
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(FakeEngine {
            base_url: format!("http://{addr}/v1"),
            script,
        })
    }

    /// Requests it has received.
    pub fn requests(&self) -> usize {
        self.script.requests.load(Ordering::SeqCst)
    }

    /// Requests it answered in full.
    pub fn answered(&self) -> usize {
        self.script.answered.load(Ordering::SeqCst)
    }

    /// Lets one `DropAfter` stream (now or the next to get there) drop its connection.
    pub fn break_stream(&self) {
        self.script.break_stream.notify_one();
    }

    /// Lets one `Held` stream (now or the next to get there) finish.
    pub fn release(&self) {
        self.script.release.notify_one();
    }

    /// `Held` streams whose client went away before they finished.
    pub fn cancelled(&self) -> usize {
        self.script.cancelled.load(Ordering::SeqCst)
    }

    /// `Held` streams open now.
    pub fn open_streams(&self) -> usize {
        self.script.open_streams.load(Ordering::SeqCst)
    }

    /// The `traceparent` header of each chat request it received.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        lock(&self.script.traceparents).clone()
    }

    /// The body of each chat request it received.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        lock(&self.script.bodies).clone()
    }

    /// The `model` of each request it received.
    pub fn models(&self) -> Vec<String> {
        lock(&self.script.models).clone()
    }
}

async fn list_models() -> Json<serde_json::Value> {
    Json(serde_json::json!({"object": "list", "data": [{"id": "fake", "object": "model"}]}))
}

fn chunk(content: &str) -> Bytes {
    let chunk = serde_json::json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]});
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Legacy completions: the same script, answers in `text` chunks (faults as for chat).
async fn complete(
    state: State<Arc<Script>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    respond(state, headers, body, Kind::Completion).await
}

async fn chat(
    state: State<Arc<Script>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    respond(state, headers, body, Kind::Chat).await
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn respond(
    State(script): State<Arc<Script>>,
    headers: axum::http::HeaderMap,
    body: serde_json::Value,
    kind: Kind,
) -> Response {
    let nth = script.requests.fetch_add(1, Ordering::SeqCst);
    lock(&script.traceparents).push(
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    lock(&script.models).push(body["model"].as_str().unwrap_or_default().to_string());
    lock(&script.bodies).push(body.clone());
    let streamed = body["stream"].as_bool().unwrap_or(false);
    let behaviour = {
        let mut queue = lock(&script.behaviours);
        if queue.len() > 1 {
            queue.pop_front().unwrap_or(Behaviour::Status(500))
        } else {
            queue.front().cloned().unwrap_or(Behaviour::Status(500))
        }
    };
    match behaviour {
        Behaviour::Status(code) => Behaviour::status_response(code),
        Behaviour::RateLimited(secs) => {
            let mut response = Behaviour::status_response(429);
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            response
        }
        Behaviour::Flaky(_) if nth % 2 == 0 => Behaviour::status_response(500),
        Behaviour::Flaky(pieces) => answer(&script, &pieces, streamed, kind),
        Behaviour::Slow(millis, pieces) => {
            // Injected fault: a slow engine.
            tokio::time::sleep(Duration::from_millis(millis)).await;
            answer(&script, &pieces, streamed, kind)
        }
        Behaviour::Answer(pieces) => answer(&script, &pieces, streamed, kind),
        // Injected fault: `stream` ignored.
        Behaviour::Whole(pieces) => answer(&script, &pieces, false, kind),
        Behaviour::DropAfter(pieces) => {
            let parts: Vec<Result<Bytes, std::io::Error>> =
                pieces.iter().map(|p| Ok(chunk(p))).collect();
            let broken = futures_util::stream::once(async move {
                script.break_stream.notified().await;
                Err(std::io::Error::other("the fake drops the connection"))
            });
            sse(Body::from_stream(
                futures_util::stream::iter(parts).chain(broken),
            ))
        }
        Behaviour::Held(pieces) => held(script, &pieces),
        Behaviour::CallTool(pieces) => {
            script.answered.fetch_add(1, Ordering::SeqCst);
            call_tool(&pieces, body["logprobs"] == serde_json::json!(true))
        }
        Behaviour::Stall => {
            // Injected fault: hold the request open far longer than any test waits.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Behaviour::status_response(500)
        }
    }
}

/// A whole answer of `pieces` (streamed, or one JSON body), counted as answered.
fn answer(script: &Script, pieces: &[&'static str], streamed: bool, kind: Kind) -> Response {
    script.answered.fetch_add(1, Ordering::SeqCst);
    if !streamed {
        let body = serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": pieces.concat()}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": pieces.len(),
                      "total_tokens": 3 + pieces.len()}
        });
        return Json(body).into_response();
    }
    let mut parts: Vec<Result<Bytes, Infallible>> = pieces
        .iter()
        .map(|p| {
            Ok(match kind {
                Kind::Chat => chunk(p),
                Kind::Completion => {
                    let chunk = serde_json::json!({"object": "text_completion", "choices": [{"index": 0, "text": p}]});
                    Bytes::from(format!("data: {chunk}\n\n"))
                }
            })
        })
        .collect();
    let end = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": pieces.len()}});
    parts.push(Ok(Bytes::from(format!(
        "data: {end}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
    ))));
    sse(Body::from_stream(futures_util::stream::iter(parts)))
}

fn call_tool(pieces: &[&'static str], logprobs: bool) -> Response {
    let (name, arguments) = pieces.split_first().unwrap_or((&"tool", &[]));
    let mut events = vec![serde_json::json!({"choices": [{"index": 0, "delta": {
        "role": "assistant", "content": null,
        "tool_calls": [{"index": 0, "id": "call_fake", "type": "function",
                        "function": {"name": name, "arguments": ""}}]}}]})];
    for piece in arguments {
        let mut choice = serde_json::json!({"index": 0, "delta": {
            "tool_calls": [{"index": 0, "function": {"arguments": piece}}]}});
        if logprobs {
            choice["logprobs"] = serde_json::json!({"content": [{"token": piece, "logprob": -0.25, "bytes": null, "top_logprobs": []}]});
        }
        events.push(serde_json::json!({"choices": [choice]}));
    }
    events.push(
        serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    );
    events.push(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": arguments.len()}}));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    sse(Body::from(body))
}

/// Counts a held stream open until it finishes, or as cancelled if it is dropped before.
struct Holding {
    script: Arc<Script>,
    finished: bool,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.script.open_streams.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.script.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn held(script: Arc<Script>, pieces: &[&'static str]) -> Response {
    script.open_streams.fetch_add(1, Ordering::SeqCst);
    let mut holding = Holding {
        script,
        finished: false,
    };
    let parts: Vec<Result<Bytes, Infallible>> = pieces.iter().map(|p| Ok(chunk(p))).collect();
    let tail = futures_util::stream::once(async move {
        holding.script.release.notified().await;
        holding.finished = true;
        holding.script.answered.fetch_add(1, Ordering::SeqCst);
        let end =
            serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        Ok(Bytes::from(format!(
            "data: {end}\n\ndata: {usage}\n\ndata: [DONE]\n\n"
        )))
    });
    sse(Body::from_stream(
        futures_util::stream::iter(parts).chain(tail),
    ))
}

impl Behaviour {
    fn status_response(code: u16) -> Response {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            serde_json::json!({"error": {"message": format!("fake says {code}"), "type": "fake"}});
        (status, Json(body)).into_response()
    }
}

fn sse(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
