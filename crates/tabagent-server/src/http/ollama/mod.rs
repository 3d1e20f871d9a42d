//! Ollama's API (`/api/*`) as a second dialect over the same services as OpenAI's: chat and
//! generate go through `generation::generate`, embeddings through `embedding`, pulls through the
//! Hub client, so Ollama-speaking apps (Open WebUI, Continue, the official `ollama` clients)
//! work against tabagent unchanged.
//!
//! What differs from Ollama: model names are tabagent's (`GET /api/tags` lists them; a
//! `:latest` tag is accepted and dropped), pulls take Hugging Face names (`OWNER/REPO:QUANT`),
//! and `options` that size the runner (`num_ctx`, `num_gpu`, `num_thread`...) are accepted and
//! left to the server's configuration (unknown ones are logged and ignored, as Ollama does).
//! Errors are Ollama's `{"error": "..."}` with the status the OpenAI endpoints give.

mod chat;
mod models;
mod options;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use futures_util::Stream;
use serde::Serialize;

use super::error::ApiError;
use crate::state::AppState;

/// The Ollama release whose API this adapter follows (clients gate features on it).
pub const OLLAMA_API_VERSION: &str = "0.12.0";

/// The `/api` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/chat", post(chat::chat))
        .route("/api/generate", post(chat::generate))
        .route("/api/embed", post(models::embed))
        .route("/api/embeddings", post(models::embeddings))
        .route("/api/tags", get(models::tags))
        .route("/api/show", post(models::show))
        .route("/api/ps", get(models::ps))
        .route("/api/pull", post(models::pull))
        .route("/api/delete", delete(models::delete))
        .route("/api/version", get(version))
}

/// `GET /api/version`.
async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "version": OLLAMA_API_VERSION }))
}

/// A JSON body whose rejections are in Ollama's shape too.
pub struct OllamaJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for OllamaJson<T> {
    type Rejection = OllamaError;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, OllamaError> {
        let super::json::ApiJson(body) =
            super::json::ApiJson::<T>::from_request(request, state).await?;
        Ok(OllamaJson(body))
    }
}

/// An error in Ollama's shape: `{"error": "..."}`, with the status tabagent gives it.
pub struct OllamaError(ApiError);

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(err: E) -> Self {
        OllamaError(err.into())
    }
}

impl OllamaError {
    /// The line a stream carries when it fails.
    fn line(err: &ApiError) -> Bytes {
        json_line(&serde_json::json!({ "error": err.message() }))
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0.message() });
        // The OpenAI-shaped response carries the status and headers (Retry-After); only the
        // body changes.
        let mut response = self.0.into_response();
        let status = response.status();
        let mut headers = std::mem::take(response.headers_mut());
        headers.remove(header::CONTENT_LENGTH);
        let mut out = (status, axum::Json(body)).into_response();
        for (name, value) in headers {
            if let Some(name) = name {
                if name != header::CONTENT_TYPE {
                    out.headers_mut().insert(name, value);
                }
            }
        }
        out
    }
}

/// `value` as one NDJSON line.
fn json_line(value: &impl Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

/// A streamed NDJSON response.
fn ndjson(lines: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt as _;
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Now, as Ollama writes times: RFC 3339 in UTC with nanoseconds.
fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// `at` in RFC 3339, UTC, with nanoseconds.
fn rfc3339(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = tabagent_core::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// A model name as Ollama clients send it: `name:latest` is `name`.
fn model_name(name: &str) -> String {
    name.strip_suffix(":latest")
        .unwrap_or(name)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_in_utc_with_nanoseconds() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_733_567_045, 5);
        assert_eq!(rfc3339(at), "2024-12-07T10:24:05.000000005Z");
    }

    #[test]
    fn the_latest_tag_is_the_bare_name() {
        assert_eq!(model_name("smollm2:latest"), "smollm2");
        assert_eq!(model_name("owner/repo:q4_k_m"), "owner/repo:q4_k_m");
    }
}
