//! OpenAI's Responses API (`POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`) as a
//! third dialect over the generation service: `input` items (or the stored conversation of
//! `previous_response_id`, plus new items) become a `ChatJob`; the answer comes back as
//! `output` items, streamed as Responses events. With `store` (the default) and the memory on,
//! each response and the conversation up to it are kept in the memory's `meta` store, so a
//! follow-up sends only its new items.

mod agent;
pub use agent::RECALLED_HEADER;
mod items;
mod store;
mod stream;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tabagent_core::{ChatMessage, OutputConstraint, Role, MAX_TOP_LOGPROBS};

use super::chat::ResponseHeaders;
use super::convert::{self, ToolShape};
use super::error::ApiError;
use super::json::ApiJson;
use super::wire::SamplingFields;
use super::{admission, generate};
use crate::callers::Caller;
use crate::generation::{self, ChatJob};
use crate::state::AppState;

/// Most metadata pairs, and the longest key and value (OpenAI's limits).
const MAX_METADATA: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

/// `POST /v1/responses` body.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    model: String,
    input: Value,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_output_tokens: Option<i64>,
    top_logprobs: Option<u8>,
    #[serde(default)]
    include: Vec<String>,
    text: Option<Value>,
    stream: Option<bool>,
    store: Option<bool>,
    metadata: Option<Map<String, Value>>,
    background: Option<bool>,
    conversation: Option<Value>,
    /// Accepted and not acted on: this server has no reasoning models or tiers.
    #[allow(dead_code)] // read by serde only
    reasoning: Option<Value>,
    #[allow(dead_code)] // read by serde only
    truncation: Option<Value>,
    #[allow(dead_code)] // read by serde only
    user: Option<String>,
    #[allow(dead_code)] // read by serde only
    service_tier: Option<Value>,
    /// The most calls of the server's tools one response may make.
    max_tool_calls: Option<usize>,
}

/// What the answer is written with, besides its output.
pub struct Echo {
    id: String,
    created_at: u64,
    model: String,
    request: Map<String, Value>,
}

impl Echo {
    /// The response object with `status` and `output`.
    pub fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<tabagent_core::Usage>,
    ) -> Value {
        let mut response = self.request.clone();
        response.insert("id".into(), json!(self.id));
        response.insert("object".into(), json!("response"));
        response.insert("created_at".into(), json!(self.created_at));
        response.insert("status".into(), json!(status));
        response.insert("model".into(), json!(self.model));
        response.insert("output".into(), Value::Array(output));
        response.insert("error".into(), Value::Null);
        response.insert(
            "incomplete_details".into(),
            match status {
                "incomplete" => json!({"reason": "max_output_tokens"}),
                _ => Value::Null,
            },
        );
        response.insert(
            "usage".into(),
            match usage {
                Some(usage) => json!({
                    "input_tokens": usage.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": usage.completion_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": usage.total_tokens(),
                }),
                None => Value::Null,
            },
        );
        Value::Object(response)
    }
}

/// Creates a model response.
pub async fn create(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    if request.model.trim().is_empty() {
        return Err(ApiError::bad_request(
            Some("model"),
            "`model` must name a model",
        ));
    }
    for (field, given) in [
        ("background", request.background == Some(true)),
        (
            "conversation",
            request.conversation.as_ref().is_some_and(|c| !c.is_null()),
        ),
    ] {
        if given {
            return Err(ApiError::bad_request(
                Some(field),
                format!("`{field}` is not supported; chain responses with `previous_response_id`"),
            ));
        }
    }
    let metadata = metadata(request.metadata.as_ref())?;
    let store = request.store.unwrap_or(true) && state.memory().is_some();
    // The conversation so far: the stored one, then the new items.
    let mut conversation = match &request.previous_response_id {
        Some(id) => store::conversation(&state, id).await?,
        None => Vec::new(),
    };
    let new_items = items::input_items(&request.input)?;
    conversation.extend(new_items);
    let mut messages = items::turns(&conversation)?;
    if let Some(instructions) = request.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.insert(0, ChatMessage::new(Role::System, instructions.clone()));
    }
    let fields = SamplingFields {
        temperature: request.temperature,
        top_p: request.top_p,
        ..SamplingFields::default()
    };
    let mut params = convert::generation(&fields, None, None)?;
    params.max_tokens = match request.max_output_tokens {
        Some(n) if n < 1 => {
            return Err(ApiError::bad_request(
                Some("max_output_tokens"),
                format!("`max_output_tokens` must be at least 1, got {n}"),
            ))
        }
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        None => None,
    };
    let (constraint, format) = text_format(request.text.as_ref())?;
    params.constraint = constraint;
    let (functions, server_tools) = agent::select(&state, &request.tools)?;
    params.tools = convert::tools(
        &functions,
        request.tool_choice.as_ref(),
        request.parallel_tool_calls,
        ToolShape::Flat,
    )?;
    let wants_logprobs = request
        .include
        .iter()
        .any(|i| i == "message.output_text.logprobs");
    params.logprobs = match request.top_logprobs {
        Some(n) if n > MAX_TOP_LOGPROBS => {
            return Err(ApiError::bad_request(
                Some("top_logprobs"),
                format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}"),
            ))
        }
        Some(n) => Some(n),
        None => wants_logprobs.then_some(0),
    };
    let ticket = admission::admit(&state, &headers, caller.as_deref())?;
    let mut job = ChatJob::chat(request.model.clone(), messages, params, ticket);
    job.trace = Some(admission::trace(&headers));
    let echo = Echo {
        id: generate::response_id("resp").replace('-', "_"),
        created_at: generate::unix_now(),
        model: request.model.clone(),
        request: echoed(&request, format, metadata, store),
    };
    if let Some(tools) = server_tools {
        let keep = store.then(|| store::Keep {
            state: state.clone(),
            conversation,
        });
        let run = agent::AgentRequest {
            model: job.model,
            messages: job.messages,
            params: job.params,
            tools,
            ticket: job.ticket,
            trace: job.trace,
            max_tool_calls: request.max_tool_calls,
            echo,
            keep,
            stream: request.stream == Some(true),
        };
        return agent::respond(&state, run).await;
    }
    let generation = generation::generate(&state, job).await?;
    generation.answers_as(&state, &echo.id);
    let headers = ResponseHeaders::of(&generation);
    let keep = store.then(|| store::Keep {
        state: state.clone(),
        conversation,
    });
    if request.stream == Some(true) {
        let body = stream::events(generation.events, echo, keep);
        return Ok(headers.on(body.into_response()));
    }
    let out = generation::collect(generation.events).await?;
    let message_id = generate::response_id("msg").replace('-', "_");
    let output = items::output(
        &out.text,
        out.logprobs.as_deref(),
        &out.tool_calls,
        &message_id,
    );
    let status = match out.reason {
        tabagent_core::FinishReason::Length => "incomplete",
        _ => "completed",
    };
    let response = echo.response(status, output.clone(), Some(out.usage));
    if let Some(keep) = keep {
        keep.put(&echo.id, &output, &response).await?;
    }
    Ok(headers.on(Json(response).into_response()))
}

/// A stored response.
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(store::response(&state, &id).await?))
}

/// Deletes a stored response.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    store::delete(&state, &id).await?;
    Ok(Json(
        json!({"id": id, "object": "response", "deleted": true}),
    ))
}

/// `text.format` → the output constraint, and the format as the response echoes it.
fn text_format(text: Option<&Value>) -> Result<(OutputConstraint, Value), ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok((OutputConstraint::None, json!({"type": "text"})));
    };
    let bad = |message: &str| ApiError::bad_request(Some("text.format"), message.to_string());
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok((OutputConstraint::None, format.clone())),
        Some("json_object") => Ok((OutputConstraint::JsonObject, format.clone())),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => {
                Ok((OutputConstraint::JsonSchema(schema.clone()), format.clone()))
            }
            _ => Err(bad("`text.format.schema` must be a JSON Schema object")),
        },
        _ => Err(bad(
            "`text.format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

/// `metadata`, checked against OpenAI's limits.
fn metadata(metadata: Option<&Map<String, Value>>) -> Result<Map<String, Value>, ApiError> {
    let Some(metadata) = metadata else {
        return Ok(Map::new());
    };
    let fine = metadata.len() <= MAX_METADATA
        && metadata.iter().all(|(k, v)| {
            k.len() <= MAX_METADATA_KEY && v.as_str().is_some_and(|v| v.len() <= MAX_METADATA_VALUE)
        });
    if !fine {
        return Err(ApiError::bad_request(
            Some("metadata"),
            format!("`metadata` holds at most {MAX_METADATA} string values, keys of at most {MAX_METADATA_KEY} characters and values of at most {MAX_METADATA_VALUE}"),
        ));
    }
    Ok(metadata.clone())
}

/// The request's settings as the response repeats them.
fn echoed(
    request: &ResponsesRequest,
    format: Value,
    metadata: Map<String, Value>,
    store: bool,
) -> Map<String, Value> {
    let mut echo = Map::new();
    echo.insert("instructions".into(), json!(request.instructions));
    echo.insert(
        "previous_response_id".into(),
        json!(request.previous_response_id),
    );
    echo.insert("tools".into(), json!(request.tools));
    echo.insert(
        "tool_choice".into(),
        request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
    );
    echo.insert(
        "parallel_tool_calls".into(),
        json!(request.parallel_tool_calls.unwrap_or(true)),
    );
    echo.insert(
        "temperature".into(),
        json!(request.temperature.unwrap_or(1.0)),
    );
    echo.insert("top_p".into(), json!(request.top_p.unwrap_or(1.0)));
    echo.insert("max_output_tokens".into(), json!(request.max_output_tokens));
    echo.insert("text".into(), json!({ "format": format }));
    echo.insert("metadata".into(), Value::Object(metadata));
    echo.insert("store".into(), json!(store));
    echo.insert("truncation".into(), json!("disabled"));
    echo.insert("background".into(), json!(false));
    echo
}
