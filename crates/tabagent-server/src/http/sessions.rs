//! Sessions: conversations the server keeps for clients that send only their new turns
//! (`X-TabAgent-Session: ID` on a chat request), with state of the client's own, in the
//! response cache's store (Redis when `response_cache.redis_url` is set, so every server sees
//! them; process memory otherwise), each for `response_cache.session_ttl_secs` after its last
//! change. `GET`, `PUT` and `DELETE /v1/sessions/{id}` read, replace and end one.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use tabagent_router::Session;
use tabagent_router::ANONYMOUS;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::callers::Caller;
use crate::generation::SessionRef;
use crate::state::AppState;

/// The header naming a chat request's session.
pub const HEADER: &str = "x-tabagent-session";

/// Checks a session id: 1 to 128 letters, digits, `.`, `_`, `:` or `-`.
fn check_id(id: &str, param: &str) -> Result<(), ApiError> {
    let fine = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            Some(param),
            "a session id is 1 to 128 letters, digits, `.`, `_`, `:` or `-`",
        ))
    }
}

/// Where a caller's session `id` is kept: each API key has sessions of its own, so one key
/// cannot read or end another's (ids cannot hold `/`, so the pair is unambiguous).
fn scoped(caller: Option<&Caller>, id: &str) -> String {
    let caller = caller.map_or(ANONYMOUS, |c| &c.0);
    format!("{caller}/{id}")
}

/// The session a chat request names, if any, scoped to its caller.
pub fn requested(
    headers: &HeaderMap,
    caller: Option<&Caller>,
) -> Result<Option<SessionRef>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| ApiError::bad_request(Some(HEADER), format!("{HEADER} is not text")))?
        .trim()
        .to_string();
    check_id(&id, HEADER)?;
    let key = scoped(caller, &id);
    Ok(Some(SessionRef { id, key }))
}

/// A session, or 404.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "`{id, messages: [{role, content}], data}`"),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
    )
)]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id, "id")?;
    let session = state
        .cache()
        .session(&scoped(caller.as_deref(), &id))
        .await
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(body(&id, &session)))
}

/// Replaces a session (messages and data), starting its time to live again.
#[utoipa::path(
    put,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    request_body(content = Object, description = "`{messages: [{role, content}], data: any}`"),
    responses(
        (status = 200, description = "The session as kept"),
        (status = 400, description = "Bad id, role or shape", body = ErrorBody),
    )
)]
pub async fn put_session(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    ApiJson(session): ApiJson<Session>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id, "id")?;
    for (i, m) in session.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(ApiError::bad_request(
                Some(&format!("messages[{i}].role")),
                "a session's roles are system, user and assistant",
            ));
        }
    }
    let limit = state.config().response_cache.session_max_bytes;
    if tabagent_router::session_bytes(&session) > limit {
        return Err(ApiError::bad_request(
            None,
            format!("a session may hold at most {limit} bytes (response_cache.session_max_bytes)"),
        ));
    }
    let key = scoped(caller.as_deref(), &id);
    let kept = state.cache().put_session(&key, session).await;
    Ok(Json(body(&id, &kept)))
}

/// Ends a session.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "`{id, deleted: true}`"),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_id(&id, "id")?;
    if state
        .cache()
        .delete_session(&scoped(caller.as_deref(), &id))
        .await
    {
        Ok(Json(serde_json::json!({"id": id, "deleted": true})))
    } else {
        Err(not_found(&id))
    }
}

fn body(id: &str, session: &Session) -> serde_json::Value {
    serde_json::json!({"id": id, "messages": session.messages, "data": session.data})
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "session_not_found",
        "id",
        format!("no session `{id}` (it may have expired)"),
    )
}
