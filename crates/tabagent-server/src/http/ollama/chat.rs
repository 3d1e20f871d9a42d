//! `POST /api/chat` and `POST /api/generate`: parse into a `ChatJob`, run it through the
//! generation service, write Ollama's NDJSON (or one object with `"stream": false`).

use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tabagent_core::{
    ChatMessage, FinishReason, GenerationEvent, ImagePart, Role, ToolCall, ToolCallAssembler, Usage,
};

use super::super::convert::{self, ToolShape};
use super::super::{admission, chat::ResponseHeaders};
use super::{json_line, model_name, ndjson, now_rfc3339, options, OllamaError, OllamaJson};
use crate::callers::Caller;
use crate::generation::{self, ChatJob, Events};
use crate::keep_alive::KeepAlive;
use crate::state::AppState;

/// Most images in one request (as the OpenAI endpoints allow).
const MAX_IMAGES: usize = 16;

/// `POST /api/chat` body.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<OllamaMessage>,
    #[serde(default)]
    tools: Vec<Value>,
    format: Option<Value>,
    options: Option<Value>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    think: Option<Value>,
}

/// One turn.
#[derive(Debug, Deserialize)]
struct OllamaMessage {
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    tool_calls: Vec<Value>,
    tool_name: Option<String>,
}

/// `POST /api/generate` body.
#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    suffix: Option<String>,
    system: Option<String>,
    template: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    images: Vec<String>,
    format: Option<Value>,
    options: Option<Value>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    think: Option<Value>,
    context: Option<Value>,
}

/// Generates the next chat message.
pub async fn chat(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    OllamaJson(body): OllamaJson<ChatBody>,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let model = model_name(&body.model);
    let keep_alive = options::keep_alive(body.keep_alive.as_ref())?;
    options::think(body.think.as_ref(), &model)?;
    // No messages: load (or, with keep_alive 0, unload) the model, as Ollama does.
    if body.messages.is_empty() {
        return load_or_unload(&state, &model, keep_alive, Reply::Chat).await;
    }
    let messages = messages(&body.messages)?;
    let mut params = options::params(body.options.as_ref())?;
    params.constraint = options::format(body.format.as_ref())?;
    params.tools = convert::tools(&body.tools, None, None, ToolShape::Nested)?;
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let job = ChatJob::chat(model.clone(), messages, params, ticket);
    let answer = Answer {
        model,
        started,
        reply: Reply::Chat,
    };
    answer
        .run(
            &state,
            &headers,
            job,
            keep_alive,
            body.stream.unwrap_or(true),
        )
        .await
}

/// Continues a prompt (through the model's chat template unless `raw`).
pub async fn generate(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    OllamaJson(body): OllamaJson<GenerateBody>,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let model = model_name(&body.model);
    let keep_alive = options::keep_alive(body.keep_alive.as_ref())?;
    options::think(body.think.as_ref(), &model)?;
    let unsupported = [
        (
            "suffix",
            body.suffix.as_ref().is_some_and(|s| !s.is_empty()),
        ),
        (
            "template",
            body.template.as_ref().is_some_and(|t| !t.is_empty()),
        ),
        (
            "context",
            body.context.as_ref().is_some_and(|c| !c.is_null()),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, given)| *given) {
        return Err(super::super::error::ApiError::bad_request(
            Some(field),
            format!("`{field}` is not supported; send the whole conversation to /api/chat instead"),
        )
        .into());
    }
    if body.prompt.is_empty() && body.images.is_empty() {
        return load_or_unload(&state, &model, keep_alive, Reply::Generate).await;
    }
    let mut params = options::params(body.options.as_ref())?;
    params.constraint = options::format(body.format.as_ref())?;
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let job = if body.raw {
        if !body.images.is_empty() {
            return Err(super::super::error::ApiError::bad_request(
                Some("images"),
                "`raw` prompts take no images",
            )
            .into());
        }
        ChatJob::prompt(model.clone(), body.prompt, params, ticket)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = body.system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new(Role::System, system));
        }
        let mut user = ChatMessage::new(Role::User, body.prompt);
        user.images = images(&body.images, 0, "images")?;
        messages.push(user);
        ChatJob::chat(model.clone(), messages, params, ticket)
    };
    let answer = Answer {
        model,
        started,
        reply: Reply::Generate,
    };
    answer
        .run(
            &state,
            &headers,
            job,
            keep_alive,
            body.stream.unwrap_or(true),
        )
        .await
}

/// Which endpoint answers: they put the text in different places.
#[derive(Clone, Copy)]
enum Reply {
    Chat,
    Generate,
}

/// How an answer is written.
struct Answer {
    model: String,
    started: Instant,
    reply: Reply,
}

/// Token counts and times, in Ollama's nanoseconds.
struct Timing {
    started: Instant,
    first: Option<Instant>,
}

impl Timing {
    /// The counts and durations: the engine's own times when it measured them, else what this
    /// end saw (to the first piece, and after it).
    fn stats(&self, usage: Usage) -> Map<String, Value> {
        let now = Instant::now();
        let first = self.first.unwrap_or(now);
        let (prompt, decode) = match usage.timings {
            Some(timings) => (timings.prompt, timings.decode),
            None => (first - self.started, now - first),
        };
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut stats = Map::new();
        stats.insert("total_duration".into(), json!(nanos(now - self.started)));
        stats.insert("load_duration".into(), json!(0));
        stats.insert("prompt_eval_count".into(), json!(usage.prompt_tokens));
        stats.insert("prompt_eval_duration".into(), json!(nanos(prompt)));
        stats.insert("eval_count".into(), json!(usage.completion_tokens));
        stats.insert("eval_duration".into(), json!(nanos(decode)));
        stats
    }
}

impl Answer {
    /// Runs `job` through the generation service and writes its answer.
    async fn run(
        self,
        state: &AppState,
        headers: &HeaderMap,
        mut job: ChatJob,
        keep_alive: Option<KeepAlive>,
        stream: bool,
    ) -> Result<Response, OllamaError> {
        job.keep_alive = keep_alive;
        job.trace = Some(admission::trace(headers));
        let generation = generation::generate(state, job).await?;
        let headers = ResponseHeaders::of(&generation);
        Ok(headers.on(self.respond(generation.events, stream).await?))
    }

    /// One object (`done: false`) carrying `text` and `calls`.
    fn piece(&self, text: &str, calls: &[ToolCall]) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("model".into(), json!(self.model));
        object.insert("created_at".into(), json!(now_rfc3339()));
        match self.reply {
            Reply::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    message["tool_calls"] = calls.iter().map(wire_call).collect();
                }
                object.insert("message".into(), message);
            }
            Reply::Generate => {
                object.insert("response".into(), json!(text));
            }
        }
        object.insert("done".into(), json!(false));
        object
    }

    /// The last object: `done: true`, why, and the counts.
    fn done(
        &self,
        text: &str,
        calls: &[ToolCall],
        reason: FinishReason,
        usage: Usage,
        timing: &Timing,
    ) -> Value {
        let mut object = self.piece(text, calls);
        object.insert("done".into(), json!(true));
        object.insert("done_reason".into(), json!(done_reason(reason)));
        object.extend(timing.stats(usage));
        Value::Object(object)
    }

    async fn respond(self, events: Events, stream: bool) -> Result<Response, OllamaError> {
        if !stream {
            let started = self.started;
            let out = generation::collect(events).await?;
            let timing = Timing {
                started,
                first: None,
            };
            let body = self.done(&out.text, &out.tool_calls, out.reason, out.usage, &timing);
            return Ok(Json(body).into_response());
        }
        let timing = Timing {
            started: self.started,
            first: None,
        };
        let state = (events, self, timing, ToolCallAssembler::default(), false);
        let lines = futures_util::stream::unfold(
            state,
            |(mut events, answer, mut timing, mut calls, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let line = match events.next().await? {
                        GenerationEvent::Text(text) | GenerationEvent::Refusal(text) => {
                            timing.first.get_or_insert_with(Instant::now);
                            json_line(&answer.piece(&text, &[]))
                        }
                        GenerationEvent::ToolCall(delta) => {
                            timing.first.get_or_insert_with(Instant::now);
                            calls.push(&delta);
                            continue;
                        }
                        GenerationEvent::Logprobs(_) => continue,
                        GenerationEvent::Finished { reason, usage } => {
                            // Ollama sends a model's calls whole, with the last message.
                            let done = std::mem::take(&mut calls).finish();
                            let line = json_line(&answer.done("", &done, reason, usage, &timing));
                            return Some((line, (events, answer, timing, calls, true)));
                        }
                        GenerationEvent::Failed(err) => {
                            let err = super::super::error::ApiError::from(err);
                            let line = OllamaError::line(&err);
                            return Some((line, (events, answer, timing, calls, true)));
                        }
                    };
                    return Some((line, (events, answer, timing, calls, false)));
                }
            },
        );
        Ok(ndjson(lines.boxed()))
    }
}

/// Why a generation ended, in Ollama's words.
fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// A call as Ollama writes it: arguments as an object.
fn wire_call(call: &ToolCall) -> Value {
    let arguments: Value =
        serde_json::from_str(&call.arguments).unwrap_or_else(|_| Value::Object(Map::new()));
    json!({"function": {"name": call.name, "arguments": arguments}})
}

/// An empty request: load the model (or unload it, with `keep_alive: 0`).
async fn load_or_unload(
    state: &AppState,
    model: &str,
    keep_alive: Option<KeepAlive>,
    reply: Reply,
) -> Result<Response, OllamaError> {
    let unload = keep_alive == Some(KeepAlive::For(std::time::Duration::ZERO));
    let reason = if unload {
        state.registry().unload(model).await?;
        "unload"
    } else {
        state.registry().acquire(model, keep_alive).await?;
        "load"
    };
    let answer = Answer {
        model: model.to_string(),
        started: Instant::now(),
        reply,
    };
    let mut object = answer.piece("", &[]);
    object.insert("done".into(), json!(true));
    object.insert("done_reason".into(), json!(reason));
    Ok(Json(Value::Object(object)).into_response())
}

/// Ollama's turns as typed ones. Calls get ids (`call_N`, Ollama has none) and each tool turn
/// answers the next unanswered call, so remote OpenAI engines can pair them.
fn messages(wire: &[OllamaMessage]) -> Result<Vec<ChatMessage>, OllamaError> {
    let bad = |param: String, message: String| {
        OllamaError::from(super::super::error::ApiError::bad_request(
            Some(&param),
            message,
        ))
    };
    let mut out = Vec::with_capacity(wire.len());
    let mut calls = 0usize;
    let mut unanswered = std::collections::VecDeque::new();
    let mut image_count = 0;
    for (index, message) in wire.iter().enumerate() {
        let at = format!("messages[{index}]");
        let role = match message.role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(bad(
                    format!("{at}.role"),
                    format!("unknown role `{other}`; expected system, user, assistant or tool"),
                ))
            }
        };
        let mut turn = ChatMessage::new(role, message.content.clone().unwrap_or_default());
        if !message.images.is_empty() {
            image_count += message.images.len();
            if image_count > MAX_IMAGES {
                return Err(bad(
                    format!("{at}.images"),
                    format!("at most {MAX_IMAGES} images are allowed in one request"),
                ));
            }
            turn.images = images(&message.images, turn.content.len(), &format!("{at}.images"))?;
        }
        if !message.tool_calls.is_empty() {
            if role != Role::Assistant {
                return Err(bad(
                    format!("{at}.tool_calls"),
                    "only assistant turns carry `tool_calls`".into(),
                ));
            }
            for (call_index, call) in message.tool_calls.iter().enumerate() {
                let call_at = format!("{at}.tool_calls[{call_index}]");
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        bad(
                            format!("{call_at}.function.name"),
                            "a tool call needs `function.name`".into(),
                        )
                    })?;
                let arguments = match call.pointer("/function/arguments") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                };
                calls += 1;
                let id = format!("call_{calls}");
                unanswered.push_back(id.clone());
                turn.tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
        }
        if role == Role::Tool {
            turn.name = message.tool_name.clone();
            turn.tool_call_id = Some(unanswered.pop_front().unwrap_or_else(|| {
                calls += 1;
                format!("call_{calls}")
            }));
        }
        out.push(turn);
    }
    Ok(out)
}

/// Base64 images (Ollama sends no data-URL prefix) as data URLs, their type read from their
/// first bytes.
fn images(wire: &[String], offset: usize, at: &str) -> Result<Vec<ImagePart>, OllamaError> {
    if wire.len() > MAX_IMAGES {
        return Err(super::super::error::ApiError::bad_request(
            Some(at),
            format!("at most {MAX_IMAGES} images are allowed in one request"),
        )
        .into());
    }
    wire.iter()
        .enumerate()
        .map(|(index, data)| {
            let data = data.trim();
            let kind = match data.get(..6) {
                Some(head) if head.starts_with("iVBORw") => "png",
                Some(head) if head.starts_with("/9j/") => "jpeg",
                Some(head) if head.starts_with("R0lGOD") => "gif",
                Some(head) if head.starts_with("UklGR") => "webp",
                _ => {
                    return Err(super::super::error::ApiError::bad_request(
                        Some(&format!("{at}[{index}]")),
                        "an image must be base64 PNG, JPEG, GIF or WebP data",
                    )
                    .into())
                }
            };
            Ok(ImagePart {
                offset,
                url: format!("data:image/{kind};base64,{data}"),
                detail: None,
            })
        })
        .collect()
}
