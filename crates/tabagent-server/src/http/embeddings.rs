//! `POST /v1/embeddings`, OpenAI's shape: a string, strings, token ids or lists of token ids in;
//! one vector per input out, as floats or base64, with real token counts.
//!
//! Inputs longer than the model's limit are cut to it by default, as sentence-transformers does
//! (`usage` counts what was embedded); `"truncate": false` makes them a 400 instead. Token-id
//! inputs are embedded as given: include the model's special tokens (`/v1/tokenize` adds them).

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::embedding::{embed, Input};
use crate::registry::Engine;
use crate::state::AppState;

/// `POST /v1/embeddings` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// An embedding model (`GET /v1/models` shows `kind: embedding`).
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of arrays of token ids.
    #[schema(value_type = Object, example = json!(["first text", "second text"]))]
    pub input: Value,
    /// `float` (default) or `base64` (little-endian float32 bytes).
    pub encoding_format: Option<String>,
    /// Keep the first `dimensions` values (then re-normalised when the model normalises);
    /// only models trained for it (Matryoshka) keep their quality when cut.
    pub dimensions: Option<u64>,
    /// Accepted for compatibility; not stored.
    #[allow(dead_code)] // read by serde only: OpenAI clients send it
    pub user: Option<String>,
    /// Cut inputs over the model's limit (default true); false answers 400 instead (extension).
    pub truncate: Option<bool>,
}

/// One vector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// `embedding`.
    pub object: &'static str,
    /// Position of its input.
    pub index: usize,
    /// Floats, or a base64 string of little-endian float32 bytes.
    #[schema(value_type = Object)]
    pub embedding: Value,
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens embedded (after truncation).
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// `POST /v1/embeddings` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingResponse {
    /// `list`.
    pub object: &'static str,
    /// One per input, in order.
    pub data: Vec<EmbeddingObject>,
    /// The model.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// Vectors for texts or token ids.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, body = EmbeddingResponse),
        (status = 400, description = "Bad input, or not an embedding model", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "Model unavailable", body = ErrorBody),
    )
)]
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                Some("encoding_format"),
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    let limit = state.config().onnx.max_inputs_per_request;
    let input = parse_input(&request.input, limit)?;
    let acquired = state.registry().acquire(&request.model, None).await?;
    let truncate = request.truncate.unwrap_or(true);
    if let Engine::Encoder(encoder) = &acquired.engine {
        // Known before any work is done.
        check_dimensions(request.dimensions, encoder.info().dimensions, &acquired.id)?;
    }
    let embedded = embed(acquired.engine, &acquired.id, input, truncate).await?;
    let width = embedded.vectors.first().map_or(0, Vec::len);
    let dimensions = check_dimensions(request.dimensions, width, &acquired.id)?;
    let renormalise = embedded.normalized && dimensions < width;
    let tokens = embedded.tokens;
    let vectors = embedded.vectors;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut vector)| {
            vector.truncate(dimensions);
            if renormalise {
                tabagent_onnx::encoder::normalize(&mut vector);
            }
            EmbeddingObject {
                object: "embedding",
                index,
                embedding: if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Value::from(vector)
                },
            }
        })
        .collect();
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: acquired.id,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// `dimensions` checked against the model's `width`: what to keep of each vector.
fn check_dimensions(dimensions: Option<u64>, width: usize, model: &str) -> Result<usize, ApiError> {
    match dimensions {
        None => Ok(width),
        Some(d) if d >= 1 && d <= width as u64 => Ok(d as usize),
        Some(d) => Err(ApiError::bad_request(
            Some("dimensions"),
            format!("`dimensions` must be between 1 and {width} for `{model}`, not {d}"),
        )),
    }
}

/// Reads `input`: a string, strings, ids or lists of ids; none empty, at most `limit`.
fn parse_input(input: &Value, limit: usize) -> Result<Input, ApiError> {
    let bad = |message: String| ApiError::bad_request(Some("input"), message);
    let parsed = match input {
        Value::String(text) => Input::Texts(vec![text.clone()]),
        Value::Array(items) if items.is_empty() => {
            return Err(bad("`input` is an empty array; send at least one input".to_string()))
        }
        Value::Array(items) if items.iter().all(Value::is_string) => Input::Texts(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Input::Tokens(vec![token_ids(items, None)?])
        }
        Value::Array(items) if items.iter().all(Value::is_array) => Input::Tokens(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| token_ids(v.as_array().map_or(&[][..], Vec::as_slice), Some(i)))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(bad(
                "`input` must be a string, an array of strings, an array of token ids or an array of arrays of token ids".to_string(),
            ))
        }
    };
    let (count, empty) = match &parsed {
        Input::Texts(texts) => (texts.len(), texts.iter().position(String::is_empty)),
        Input::Tokens(lists) => (lists.len(), lists.iter().position(Vec::is_empty)),
    };
    if count > limit {
        return Err(bad(format!(
            "`input` has {count} items; at most {limit} per request"
        )));
    }
    if let Some(at) = empty {
        return Err(bad(if input.is_string() {
            "`input` is an empty string".to_string()
        } else {
            format!("`input[{at}]` is empty")
        }));
    }
    Ok(parsed)
}

fn token_ids(items: &[Value], at: Option<usize>) -> Result<Vec<i64>, ApiError> {
    let place = at.map_or_else(|| "input".to_string(), |i| format!("input[{i}]"));
    items
        .iter()
        .map(|v| {
            v.as_i64().filter(|id| *id >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    Some("input"),
                    format!("`{place}` holds {v}, which is not a token id"),
                )
            })
        })
        .collect()
}
