//! The context-enhancement step: before a chat request is answered, what the memory holds
//! about its last user message is added to the prompt, as (part of) the first system message.
//! A route turns it on (`[router.routes.NAME.context]`); any request may ask for it
//! (`X-TabAgent-Context: memory`) or turn its route's off (`X-TabAgent-Context: none`).
//! The step itself is `generation::context`.

use axum::http::HeaderMap;
use tabagent_router::ContextConfig;

use super::error::ApiError;
use crate::state::AppState;

/// The header asking for (or turning off) the step.
pub const HEADER: &str = "x-tabagent-context";
/// The response header saying how many records were added.
pub const RECORDS_HEADER: &str = "x-tabagent-context-records";

/// The step this request gets: its route's, unless the header says otherwise.
pub fn wanted(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
) -> Result<Option<ContextConfig>, ApiError> {
    // An alias of a route gets the route's step too.
    let route = state
        .config()
        .router
        .route(model)
        .and_then(|r| r.context.clone());
    let Some(value) = headers.get(HEADER) else {
        return Ok(route);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if v == "none" => Ok(None),
        Ok(v) if v == "memory" && !state.config().memory.enabled => Err(ApiError::bad_request(
            Some(HEADER),
            "this server's memory is off (memory.enabled = false): there is no context to add",
        )),
        Ok(v) if v == "memory" => Ok(Some(route.unwrap_or_default())),
        _ => Err(ApiError::bad_request(
            Some(HEADER),
            format!("{HEADER} must be `memory` or `none`"),
        )),
    }
}
