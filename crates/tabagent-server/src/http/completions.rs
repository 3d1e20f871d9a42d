//! `POST /v1/completions`: raw prompts, for base models without a chat template.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tabagent_core::FinishReason;

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
        let format = CompletionChunks { id, created, model };
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
            logprobs: None,
        }],
        usage: Some(generate::wire_usage(out.usage)),
    };
    Ok(Json(response).into_response())
}

struct CompletionChunks {
    id: String,
    created: u64,
    model: String,
}

impl CompletionChunks {
    fn chunk(
        &self,
        text: &str,
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
                logprobs: None,
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

    fn text(&self, text: &str, _logprobs: &[tabagent_core::TokenLogprob]) -> String {
        self.chunk(text, None, None)
    }

    fn finish(&self, reason: FinishReason) -> String {
        self.chunk("", Some(reason.as_str()), None)
    }

    fn usage(&self, usage: WireUsage) -> String {
        self.chunk("", None, Some(usage))
    }
}
