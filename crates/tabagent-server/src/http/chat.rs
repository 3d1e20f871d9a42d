//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tabagent_core::{FinishReason, TokenLogprob, ToolCallDelta};

use super::error::{ApiError, ErrorBody};
use super::generate::{self, ChunkFormat};
use super::json::ApiJson;
use super::wire::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChunkChoice,
    ChunkDelta, ResponseMessage, WireLogprobs, WireTimings, WireToolCall, WireToolCallDelta,
    WireUsage,
};
use super::{admission, context, conversation, convert, sessions};
use crate::callers::Caller;
use crate::generation::{self, ChatJob, Generation};
use crate::state::AppState;

/// Generates the assistant's next message.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The reply; with `stream: true`, server-sent `chat.completion.chunk` events ending in `[DONE]`", body = ChatCompletionResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = "Busy (see Retry-After) or model unavailable", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let wire = convert::chat(request)?;
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let mut job = ChatJob::chat(wire.model, wire.messages, wire.params, ticket);
    job.fixed = wire.fixed;
    job.keep_alive = wire.keep_alive;
    job.trace = Some(admission::trace(&headers));
    job.conversation = conversation::conversation_id(&headers, wire.conversation)?;
    job.session = sessions::requested(&headers, caller.as_deref())?;
    job.context = context::wanted(&state, &job.model, &headers)?;
    let model = job.model.clone();
    let generation = generation::generate(&state, job).await?;
    let id = generate::response_id("chatcmpl");
    generation.answers_as(&state, &id);
    let created = generate::unix_now();
    let headers = ResponseHeaders::of(&generation);
    let sources = generation
        .context
        .as_ref()
        .map(|g| g.sources.clone())
        .unwrap_or_default();
    if wire.stream {
        let format = ChatChunks {
            id,
            created,
            model,
            sources,
        };
        let body = generate::stream(generation.events, format, wire.include_usage);
        return Ok(headers.on(body.into_response()));
    }
    let out = generation::collect(generation.events).await?;
    let response = ChatCompletionResponse {
        id,
        object: "chat.completion",
        created,
        model,
        choices: vec![ChatChoice {
            index: 0,
            message: ResponseMessage {
                role: "assistant",
                content: (!out.text.is_empty() || out.tool_calls.is_empty()).then_some(out.text),
                tool_calls: (!out.tool_calls.is_empty())
                    .then(|| out.tool_calls.into_iter().map(WireToolCall::from).collect()),
                refusal: out.refusal,
            },
            finish_reason: out.reason.as_str(),
            logprobs: out.logprobs.as_deref().map(WireLogprobs::from_entries),
        }],
        usage: generate::wire_usage(out.usage),
        timings: WireTimings::of(&out.usage),
        sources,
    };
    Ok(headers.on(Json(response).into_response()))
}

/// `hit`, `semantic-hit` or `miss` on a request the response cache could answer (temperature 0
/// or a seed).
pub const CACHE_HEADER: &str = "x-tabagent-cache";

/// What the service's steps did, as response headers: the conversation recorded, the session,
/// the context records added, the cache's answer.
pub struct ResponseHeaders(Vec<(HeaderName, HeaderValue)>);

impl ResponseHeaders {
    /// The headers for `generation`.
    pub fn of(generation: &Generation) -> ResponseHeaders {
        let mut headers = Vec::new();
        let mut text = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.push((HeaderName::from_static(name), value));
            }
        };
        if let Some(id) = &generation.conversation {
            text(conversation::HEADER, id);
        }
        if let Some(id) = &generation.session {
            text(sessions::HEADER, id);
        }
        if let Some(status) = generation.cache {
            text(CACHE_HEADER, status.as_str());
        }
        if let Some(grounding) = &generation.context {
            headers.push((
                HeaderName::from_static(context::RECORDS_HEADER),
                HeaderValue::from(grounding.records),
            ));
        }
        ResponseHeaders(headers)
    }

    /// `response` with these headers.
    pub fn on(self, mut response: Response) -> Response {
        for (name, value) in self.0 {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    sources: Vec<crate::generation::context::CitedSource>,
}

impl ChatChunks {
    fn chunk(
        &self,
        delta: ChunkDelta<'_>,
        logprobs: Option<WireLogprobs>,
        finish_reason: Option<&'static str>,
        usage: Option<WireUsage>,
    ) -> String {
        self.chunk_with(delta, logprobs, finish_reason, usage, None)
    }

    fn chunk_with(
        &self,
        delta: ChunkDelta<'_>,
        logprobs: Option<WireLogprobs>,
        finish_reason: Option<&'static str>,
        usage: Option<WireUsage>,
        timings: Option<WireTimings>,
    ) -> String {
        // The sources go with the finish reason, once.
        let sources: &[crate::generation::context::CitedSource] = match finish_reason {
            Some(_) => &self.sources,
            None => &[],
        };
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason,
            }]
        };
        let chunk = ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
            timings,
            sources,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

/// A delta carrying nothing but what `fill` sets.
fn delta<'a>(fill: impl FnOnce(&mut ChunkDelta<'a>)) -> ChunkDelta<'a> {
    let mut delta = ChunkDelta {
        role: None,
        content: None,
        tool_calls: None,
        refusal: None,
    };
    fill(&mut delta);
    delta
}

impl ChunkFormat for ChatChunks {
    fn tool_call(&self, call: &ToolCallDelta) -> Option<String> {
        let delta = delta(|d| d.tool_calls = Some(vec![WireToolCallDelta::from(call)]));
        Some(self.chunk(delta, None, None, None))
    }

    fn refusal(&self, text: &str) -> Option<String> {
        Some(self.chunk(delta(|d| d.refusal = Some(text)), None, None, None))
    }

    fn opening(&self) -> Option<String> {
        let delta = delta(|d| {
            d.role = Some("assistant");
            d.content = Some("");
        });
        Some(self.chunk(delta, None, None, None))
    }

    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String {
        let logprobs = (!logprobs.is_empty()).then(|| WireLogprobs::from_entries(logprobs));
        self.chunk(delta(|d| d.content = Some(text)), logprobs, None, None)
    }

    fn finish(&self, reason: FinishReason, usage: &tabagent_core::Usage) -> String {
        let timings = WireTimings::of(usage);
        self.chunk_with(delta(|_| {}), None, Some(reason.as_str()), None, timings)
    }

    fn usage(&self, usage: WireUsage) -> String {
        self.chunk(delta(|_| {}), None, None, Some(usage))
    }
}
