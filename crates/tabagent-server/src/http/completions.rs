//! `POST /v1/completions`: raw prompts, for base models without a chat template.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde_json::{json, Map, Value};
use tabagent_core::{FinishReason, TokenLogprob};

use super::error::{ApiError, ErrorBody};
use super::generate::{self, ChunkFormat};
use super::json::ApiJson;
use super::wire::{CompletionChoice, CompletionRequest, CompletionResponse, WireUsage};
use super::{admission, convert};
use crate::callers::Caller;
use crate::generation::{self, ChatJob};
use crate::state::AppState;

/// Continues a raw prompt.
#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The continuation; with `stream: true`, server-sent `text_completion` chunks ending in `[DONE]`", body = CompletionResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = "Busy (see Retry-After) or model unavailable", body = ErrorBody),
    )
)]
pub async fn completions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let wire = convert::completion(request)?;
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let mut job = ChatJob::prompt(wire.model, wire.prompt, wire.params, ticket);
    job.fixed = wire.fixed;
    job.keep_alive = wire.keep_alive;
    job.trace = Some(admission::trace(&headers));
    let model = job.model.clone();
    let generation = generation::generate(&state, job).await?;
    let id = generate::response_id("cmpl");
    let created = generate::unix_now();
    if wire.stream {
        let format = CompletionChunks {
            id,
            created,
            model,
            sent: std::cell::Cell::new(0),
        };
        return Ok(generate::stream(generation.events, format, wire.include_usage).into_response());
    }
    let out = generation::collect(generation.events).await?;
    let response = CompletionResponse {
        id: &id,
        object: "text_completion",
        created,
        model: &model,
        choices: vec![CompletionChoice {
            text: &out.text,
            index: 0,
            finish_reason: Some(out.reason.as_str()),
            logprobs: out.logprobs.as_deref().map(|l| legacy_logprobs(l, 0)),
        }],
        usage: Some(generate::wire_usage(out.usage)),
    };
    Ok(Json(response).into_response())
}

/// Legacy completions' log probabilities: parallel lists of the tokens, their log
/// probabilities, their alternatives (token → log probability) and where each starts in the
/// completion (in characters, from `offset`).
fn legacy_logprobs(entries: &[TokenLogprob], offset: usize) -> Value {
    let mut at = offset;
    let text_offset: Vec<usize> = entries
        .iter()
        .map(|entry| {
            let start = at;
            at += entry.token.chars().count();
            start
        })
        .collect();
    json!({
        "tokens": entries.iter().map(|e| e.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            e.top.iter().map(|alt| (alt.token.clone(), json!(alt.logprob))).collect::<Map<String, Value>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

struct CompletionChunks {
    id: String,
    created: u64,
    model: String,
    /// Characters of the completion sent so far (where the next token's `text_offset` is).
    sent: std::cell::Cell<usize>,
}

impl CompletionChunks {
    fn chunk(
        &self,
        text: &str,
        logprobs: Option<Value>,
        finish_reason: Option<&'static str>,
        usage: Option<WireUsage>,
    ) -> String {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![CompletionChoice {
                text,
                index: 0,
                finish_reason,
                logprobs,
            }]
        };
        let chunk = CompletionResponse {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }
}

impl ChunkFormat for CompletionChunks {
    fn opening(&self) -> Option<String> {
        None
    }

    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String {
        let logprobs = (!logprobs.is_empty()).then(|| legacy_logprobs(logprobs, self.sent.get()));
        self.sent.set(self.sent.get() + text.chars().count());
        self.chunk(text, logprobs, None, None)
    }

    fn finish(&self, reason: FinishReason, _usage: &tabagent_core::Usage) -> String {
        self.chunk("", None, Some(reason.as_str()), None)
    }

    fn usage(&self, usage: WireUsage) -> String {
        self.chunk("", None, None, Some(usage))
    }
}
