//! Letting a generation request in: who asks (the guard's [`Caller`]), in which class
//! (`X-TabAgent-Priority: interactive | batch`, never above the key's), by when
//! (`X-TabAgent-Timeout: SECONDS`), and whether the caller's rate limits and token budgets
//! allow it now (429 with Retry-After when not).

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use tabagent_router::{Priority, Ticket};

use super::error::ApiError;
use crate::callers::Caller;
use crate::state::AppState;

/// The header asking for a priority class.
pub const PRIORITY_HEADER: &str = "x-tabagent-priority";
/// The header giving the request's deadline, in seconds from its arrival.
pub const TIMEOUT_HEADER: &str = "x-tabagent-timeout";

/// The longest deadline a request may ask for (a day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Checks the request's headers and its caller's limits; the ticket it runs under.
pub fn admit(
    state: &AppState,
    headers: &HeaderMap,
    caller: Option<&Caller>,
) -> Result<Ticket, ApiError> {
    let arrived = Instant::now();
    let caller = caller.cloned().unwrap_or_else(Caller::anonymous).0;
    let asked = match header(headers, PRIORITY_HEADER)? {
        None => None,
        Some(text) => Some(Priority::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                Some(PRIORITY_HEADER),
                format!("{PRIORITY_HEADER} must be `interactive` or `batch`, not `{text}`"),
            )
        })?),
    };
    let deadline = match header(headers, TIMEOUT_HEADER)? {
        None => None,
        Some(text) => {
            let secs = text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_TIMEOUT_SECS)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        Some(TIMEOUT_HEADER),
                        format!("{TIMEOUT_HEADER} must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}, not `{text}`"),
                    )
                })?;
            Some(arrived + Duration::from_secs_f64(secs))
        }
    };
    let scheduler = state.scheduler();
    scheduler.admit(&caller, arrived)?;
    Ok(Ticket {
        priority: scheduler.priority(&caller, asked),
        caller,
        deadline,
    })
}

/// The trace this request belongs to: the caller's (`traceparent`), or a new one; recorded in
/// the request's log span and continued on any remote engine it is routed to.
pub fn trace(headers: &HeaderMap) -> tabagent_router::TraceParent {
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tabagent_router::TraceParent::parse)
        .unwrap_or_else(tabagent_router::TraceParent::root);
    tracing::Span::current().record("trace_id", trace.trace_id());
    trace
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(Some(name), format!("{name} is not text")))
        })
        .transpose()
}
