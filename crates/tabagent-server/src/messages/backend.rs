//! Where a message's request is served: the HTTP API's router in this process, or a tabagent
//! server already running on this machine (so a native messaging host shares its loaded models).
//! Either way the request is an HTTP request and the reply an HTTP response, so every endpoint,
//! guard and error of the HTTP API applies unchanged.

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tower::ServiceExt;

use crate::callers::Caller;

/// A request decoded from a message.
#[derive(Debug)]
pub struct ApiRequest {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The response: status, content type and the body as it arrives (a stream for SSE).
pub struct ApiReply {
    pub status: u16,
    pub content_type: String,
    pub body: BoxStream<'static, Result<Bytes, String>>,
}

/// A request that never reached an API.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the tabagent server at {url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the request could not be built: {0}")]
    Invalid(String),
}

/// Marks a request as coming from a transport in this process that authenticated its client
/// already: native messaging (the browser checked the extension against the host manifest's
/// `allowed_origins`) or a WebRTC session (opened by a request the guard let through). The
/// guard lets it pass with the caller it carries; its Host and Origin are ours, not a page's.
#[derive(Debug, Clone, Copy)]
pub struct TrustedTransport;

#[derive(Clone)]
pub enum Backend {
    /// The API's router, in this process, and who the requests count against.
    InProcess { app: axum::Router, caller: Caller },
    /// A running server's HTTP API.
    Server {
        client: reqwest::Client,
        /// `http://host:port`, without a trailing slash.
        url: String,
        api_key: Option<String>,
    },
}

impl Backend {
    /// Where requests go, in words (for the log).
    pub fn describe(&self) -> String {
        match self {
            Backend::InProcess { .. } => "in this process".to_string(),
            Backend::Server { url, .. } => format!("through the server at {url}"),
        }
    }

    pub async fn send(&self, request: ApiRequest) -> Result<ApiReply, BackendError> {
        match self {
            Backend::InProcess { app, caller } => {
                let mut built = Request::builder()
                    .method(request.method)
                    .uri(&request.path)
                    .body(Body::from(request.body))
                    .map_err(|err| BackendError::Invalid(err.to_string()))?;
                *built.headers_mut() = request.headers;
                built.headers_mut().insert(
                    axum::http::header::HOST,
                    HeaderValue::from_static("localhost"),
                );
                built.extensions_mut().insert(TrustedTransport);
                built.extensions_mut().insert(caller.clone());
                // The app's error type is Infallible: every failure is a response.
                let Ok(response) = app.clone().oneshot(built).await;
                let (parts, body) = response.into_parts();
                Ok(ApiReply::new(
                    parts.status,
                    &parts.headers,
                    body.into_data_stream(),
                ))
            }
            Backend::Server {
                client,
                url,
                api_key,
            } => {
                let mut built = client
                    .request(request.method, format!("{url}{}", request.path))
                    .headers(request.headers)
                    .body(request.body);
                if let Some(key) = api_key {
                    built = built.bearer_auth(key);
                }
                let response = built
                    .send()
                    .await
                    .map_err(|err| BackendError::Unreachable {
                        url: url.clone(),
                        reason: err.to_string(),
                    })?;
                let (status, headers) = (response.status(), response.headers().clone());
                Ok(ApiReply::new(status, &headers, response.bytes_stream()))
            }
        }
    }
}

impl ApiReply {
    fn new<E: std::fmt::Display>(
        status: axum::http::StatusCode,
        headers: &HeaderMap,
        body: impl futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> ApiReply {
        ApiReply {
            status: status.as_u16(),
            content_type: content_type(headers),
            body: body
                .map(|chunk| chunk.map_err(|err| err.to_string()))
                .boxed(),
        }
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether a tabagent server answers at `url` (its health endpoint, within a second).
pub async fn server_answers(client: &reqwest::Client, url: &str) -> bool {
    let probe = client
        .get(format!("{url}/v1/health"))
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await;
    match probe {
        Ok(response) if response.status().is_success() => response
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|health| health.get("status").is_some()),
        _ => false,
    }
}
