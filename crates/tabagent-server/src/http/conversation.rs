//! Conversations over HTTP: the id a chat request names (`conversation_id` or the
//! `X-Conversation-Id` header), and summarizing one on demand. Recording is
//! `generation::recording`; summaries are `summaries`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::memory::RecordObject;
use crate::state::AppState;

/// The header that names a conversation.
pub const HEADER: &str = "x-conversation-id";
/// Longest conversation id.
const MAX_ID_BYTES: usize = 512;

/// The conversation a request names, from its body or header (which must agree).
pub fn conversation_id(
    headers: &HeaderMap,
    field: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get(HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        Some("conversation_id"),
                        "the X-Conversation-Id header is not visible ASCII",
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let id =
        match (field, header) {
            (Some(a), Some(b)) if a != b => return Err(ApiError::bad_request(
                Some("conversation_id"),
                "`conversation_id` and the X-Conversation-Id header name different conversations",
            )),
            (field, header) => field.or(header),
        };
    if let Some(id) = &id {
        if id.trim().is_empty() || id.len() > MAX_ID_BYTES {
            return Err(ApiError::bad_request(
                Some("conversation_id"),
                format!("a conversation id is 1 to {MAX_ID_BYTES} bytes, not blank"),
            ));
        }
    }
    Ok(id)
}

/// Summarize a conversation now (the background summarizer does it every
/// `memory.summarize_after` messages).
#[utoipa::path(
    post,
    path = "/v1/memory/conversations/{conversation}/summarize",
    tag = "memory",
    params(("conversation" = String, Path, description = "The conversation id")),
    responses((status = 200, description = "The summary record", body = RecordObject), (status = 404, body = ErrorBody))
)]
pub async fn summarize_now(
    State(state): State<AppState>,
    Path(conversation): Path<String>,
) -> Result<Json<RecordObject>, ApiError> {
    match crate::summaries::summarize(&state, &conversation, true).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::not_found(
            "conversation_not_found",
            "conversation",
            format!("conversation `{conversation}` has no messages"),
        )),
    }
}
