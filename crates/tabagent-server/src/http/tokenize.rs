//! `POST /v1/tokenize` and `POST /v1/detokenize`: a model's own tokenizer, for counting tokens
//! before sending a request and for debugging prompts. GGUF models use llama.cpp's vocabulary,
//! encoders their `tokenizer.json`; the model is loaded if it is not yet.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::convert;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::wire::WireMessage;
use crate::registry::Engine;
use crate::state::AppState;

/// `POST /v1/tokenize` body: `text`, or `messages` rendered with the model's chat template.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The model whose tokenizer to use.
    pub model: String,
    /// A raw prompt, tokenized as `/v1/completions` does.
    pub text: Option<String>,
    /// A conversation, rendered with the model's chat template and tokenized as
    /// `/v1/chat/completions` does: `count` is then that request's `usage.prompt_tokens`.
    pub messages: Option<Vec<WireMessage>>,
    /// Add the tokens the model puts in front of a prompt (BOS) when it wants them (default true).
    pub add_special_tokens: Option<bool>,
    /// Also return each token's text.
    pub with_pieces: Option<bool>,
}

/// `POST /v1/tokenize` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenizeResponse {
    /// The model.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<i32>,
    /// How many.
    pub count: usize,
    /// Each token's text, with `with_pieces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<String>>,
}

/// `POST /v1/detokenize` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// The model whose vocabulary the ids come from.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<i64>,
}

/// `POST /v1/detokenize` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DetokenizeResponse {
    /// The model.
    pub model: String,
    /// The text, special tokens written out.
    pub text: String,
}

/// A model's tokens for a text or a conversation.
#[utoipa::path(
    post,
    path = "/v1/tokenize",
    tag = "tokens",
    request_body = TokenizeRequest,
    responses(
        (status = 200, body = TokenizeResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let input = match (request.text, request.messages) {
        (Some(text), None) => Input::Text(text),
        (None, Some(messages)) => Input::Chat(convert::messages(&messages)?),
        _ => {
            return Err(ApiError::bad_request(
                None,
                "send exactly one of `text` and `messages`",
            ))
        }
    };
    let add_special = request.add_special_tokens.unwrap_or(true);
    let with_pieces = request.with_pieces.unwrap_or(false);
    let acquired = state.registry().acquire(&request.model, None).await?;
    let (tokens, pieces) = match acquired.engine {
        Engine::Llama(engine) => tokio::task::spawn_blocking(move || {
            let tokens = match input {
                Input::Text(text) => engine.tokenize(&text, add_special),
                // As a chat request has them: what a client wrote stays plain text.
                Input::Chat(messages) => engine.chat_tokens(&messages, &Default::default())?,
            };
            let pieces = if with_pieces {
                Some(engine.token_pieces(&tokens)?)
            } else {
                None
            };
            Ok::<_, tabagent_core::InferenceError>((tokens, pieces))
        })
        .await
        .map_err(ApiError::internal)??,
        Engine::Onnx(_) | Engine::Worker(_) => return Err(no_tokenizer(&acquired.id)),
        Engine::Encoder(encoder) => {
            let Input::Text(text) = input else {
                return Err(ApiError::bad_request(
                    Some("messages"),
                    format!(
                        "`{}` is an embedding model: it has no chat template; send `text`",
                        acquired.id
                    ),
                ));
            };
            let pieces =
                tokio::task::spawn_blocking(move || encoder.tokenizer().pieces(&text, add_special))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e| ApiError::bad_request(Some("text"), e.to_string()))?;
            // Vocabularies are far below 2^31 ids.
            let tokens = pieces.iter().map(|p| p.id as i32).collect();
            (
                tokens,
                with_pieces.then(|| pieces.into_iter().map(|p| p.text).collect()),
            )
        }
    };
    Ok(Json(TokenizeResponse {
        model: acquired.id,
        count: tokens.len(),
        tokens,
        pieces,
    }))
}

/// The text of a model's token ids.
#[utoipa::path(
    post,
    path = "/v1/detokenize",
    tag = "tokens",
    request_body = DetokenizeRequest,
    responses(
        (status = 200, body = DetokenizeResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    // Out of i32 range is out of every vocabulary; the engine names ids beyond this one's.
    let tokens = request
        .tokens
        .iter()
        .enumerate()
        .map(|(at, &id)| {
            i32::try_from(id).map_err(|_| {
                ApiError::bad_request(
                    Some("tokens"),
                    format!("token {id} at index {at} is not a token id"),
                )
            })
        })
        .collect::<Result<Vec<i32>, ApiError>>()?;
    let acquired = state.registry().acquire(&request.model, None).await?;
    let text = match acquired.engine {
        Engine::Llama(engine) => tokio::task::spawn_blocking(move || engine.detokenize(&tokens))
            .await
            .map_err(ApiError::internal)??,
        Engine::Onnx(_) | Engine::Worker(_) => return Err(no_tokenizer(&acquired.id)),
        Engine::Encoder(encoder) => {
            let ids = tokens
                .iter()
                .map(|&id| {
                    u32::try_from(id).map_err(|_| {
                        ApiError::bad_request(
                            Some("tokens"),
                            format!("token {id} is not a token id"),
                        )
                    })
                })
                .collect::<Result<Vec<u32>, ApiError>>()?;
            tokio::task::spawn_blocking(move || encoder.tokenizer().decode(&ids, false))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::bad_request(Some("tokens"), e.to_string()))?
        }
    };
    Ok(Json(DetokenizeResponse {
        model: acquired.id,
        text,
    }))
}

enum Input {
    Text(String),
    Chat(Vec<tabagent_core::ChatMessage>),
}

fn no_tokenizer(model: &str) -> ApiError {
    ApiError::bad_request(
        Some("model"),
        format!("`{model}` has no tokenizer here (a plain ONNX model, or one the ML worker runs)"),
    )
}
