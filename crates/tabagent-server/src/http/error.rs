//! The one HTTP error: an OpenAI-style body, the same for plain responses and SSE streams.
//!
//! Client errors carry their message; server errors answer a generic one and the full error is
//! logged once, here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tabagent_core::InferenceError;
use utoipa::ToSchema;

use crate::registry::RegistryError;

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A sentence for the caller.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `not_found_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable machine-readable code.
    pub code: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_secs: None,
        }
    }

    /// 400: the request is wrong; `param` names the field.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            param: param.map(str::to_string),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "a valid API key is required: send `Authorization: Bearer <key>`",
            )
        }
    }

    /// 403: the request came through a host or origin that is not allowed.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::FORBIDDEN, "permission_error", message)
        }
    }

    /// 404 for a path that does not exist.
    pub fn route_not_found(path: &str) -> Self {
        Self {
            code: Some("not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("no route for {path}"),
            )
        }
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self {
            code: Some("method_not_allowed"),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method not allowed for this path",
            )
        }
    }

    /// 413: the body is larger than allowed.
    pub fn too_large(limit: usize) -> Self {
        Self {
            code: Some("request_too_large"),
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body exceeds {limit} bytes"),
            )
        }
    }

    /// 503 while start-up work is still running.
    pub fn not_ready() -> Self {
        Self {
            code: Some("not_ready"),
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is starting: the default model is not loaded yet",
            )
        }
    }

    /// 503 for a known, explained outage.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// 409: the request conflicts with the model's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::CONFLICT, "invalid_request_error", message)
        }
    }

    /// 429: the caller holds as much of something as one caller may (sessions, pulls).
    pub fn too_many_requests(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 422: a sound request the model could not carry out as asked (an answer cut off at the
    /// caller's `max_tokens`).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                message,
            )
        }
    }

    /// 404 for a named thing (not a route) that does not exist.
    pub fn not_found(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            param: Some(param.to_string()),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
        }
    }

    /// 502: the Hugging Face Hub (or another upstream) failed.
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::new(StatusCode::BAD_GATEWAY, "server_error", message)
        }
    }

    /// 500 with a generic message; `detail` is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal server error; see the server log",
        )
    }

    /// The body as a JSON value.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body as a JSON string, for SSE error events.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body())
            .unwrap_or_else(|_| r#"{"error":{"message":"internal error"}}"#.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<InferenceError> for ApiError {
    fn from(err: InferenceError) -> Self {
        match err {
            InferenceError::InvalidRequest { param, message }
            | InferenceError::Unsupported { param, message } => {
                Self::bad_request(param.as_deref(), message)
            }
            overflow @ InferenceError::ContextOverflow { .. } => Self {
                code: Some("context_length_exceeded"),
                ..Self::bad_request(Some("messages"), overflow.to_string())
            },
            busy @ InferenceError::QueueFull { .. } => Self {
                code: Some("server_busy"),
                retry_after_secs: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    busy.to_string(),
                )
            },
            late @ InferenceError::DeadlineExceeded(_) => Self {
                code: Some("deadline_exceeded"),
                ..Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "server_error",
                    late.to_string(),
                )
            },
            unavailable @ InferenceError::Unavailable(_) => Self {
                code: Some("engine_unavailable"),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    unavailable.to_string(),
                )
            },
            other => Self::internal(other),
        }
    }
}

impl From<tabagent_router::RouteError> for ApiError {
    fn from(err: tabagent_router::RouteError) -> Self {
        use tabagent_router::RouteError;
        let message = err.to_string();
        match err {
            RouteError::UnknownModel(_) => Self {
                code: Some("model_not_found"),
                param: Some("model".to_string()),
                ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            },
            RouteError::Caller(inner) => inner.into(),
            RouteError::Refused(refused) => refused.into(),
            RouteError::Deadline { .. } => Self {
                code: Some("deadline_exceeded"),
                ..Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
            },
            // Every provider was rate limited: the caller is told when to come back.
            RouteError::Exhausted {
                retry_after: Some(wait),
                ..
            } => Self {
                code: Some("rate_limited"),
                retry_after_secs: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "server_error", message)
            },
            RouteError::Exhausted { .. } => {
                tracing::warn!(error = %message, "no provider could answer");
                Self {
                    code: Some("upstream_unavailable"),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
                }
            }
        }
    }
}

impl From<tabagent_router::Refused> for ApiError {
    fn from(err: tabagent_router::Refused) -> Self {
        use tabagent_router::Refused;
        let message = err.to_string();
        match err {
            Refused::OverLimit { retry_after, .. } => Self {
                code: Some("rate_limit_exceeded"),
                retry_after_secs: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            },
            Refused::QueueFull { .. } => Self {
                code: Some("server_busy"),
                retry_after_secs: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
            },
            Refused::Deadline { .. } => Self {
                code: Some("deadline_exceeded"),
                ..Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
            },
        }
    }
}

impl From<tabagent_memory::MemoryError> for ApiError {
    fn from(err: tabagent_memory::MemoryError) -> Self {
        use tabagent_memory::MemoryError;
        match &err {
            MemoryError::NotFound(_) => Self::not_found("record_not_found", "id", err.to_string()),
            MemoryError::EntityNotFound(_) => {
                Self::not_found("entity_not_found", "entity", err.to_string())
            }
            MemoryError::RelationNotFound(_) => {
                Self::not_found("relation_not_found", "id", err.to_string())
            }
            _ if err.is_callers_fault() => Self::bad_request(err.param(), err.to_string()),
            MemoryError::Closed => Self::unavailable("memory_closed", err.to_string()),
            MemoryError::Unavailable(_) => Self::unavailable("memory_unavailable", err.to_string()),
            _ => Self::internal(err),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match err {
            RegistryError::NotFound(_) => Self {
                code: Some("model_not_found"),
                param: Some("model".to_string()),
                ..Self::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    err.to_string(),
                )
            },
            // A model that exists but cannot be loaded: the operator must act, the caller can try
            // another model. Not a 500: nothing in the server is broken.
            RegistryError::WrongKind { .. } => Self {
                code: Some("model_kind_mismatch"),
                param: Some("model".to_string()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    err.to_string(),
                )
            },
            RegistryError::Load { .. } | RegistryError::LoadEncoder { .. } => {
                tracing::warn!(error = %err, "model unavailable");
                Self {
                    code: Some("model_unavailable"),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        err.to_string(),
                    )
                }
            }
            RegistryError::OverBudget { .. } => Self {
                code: Some("model_over_budget"),
                retry_after_secs: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    err.to_string(),
                )
            },
            RegistryError::Busy(_) => Self::conflict("model_busy", err.to_string()),
            // The file is the caller's choice, and what llama.cpp did with it is the answer.
            RegistryError::Unusable { .. } => Self {
                code: Some("model_unusable"),
                param: Some("model".to_string()),
                ..Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    err.to_string(),
                )
            },
            RegistryError::NoWorker(_) => Self::unavailable("worker_not_set_up", err.to_string()),
            // The worker's own reason (bad files, not installed, gone) keeps its status; the
            // message names the model.
            RegistryError::Worker { source, .. } => Self {
                message,
                ..ApiError::from(source)
            },
            other => Self::internal(other),
        }
    }
}

impl From<tabagent_hub::HubError> for ApiError {
    fn from(err: tabagent_hub::HubError) -> Self {
        use tabagent_hub::HubError as E;
        let message = err.to_string();
        match err {
            E::Invalid { .. } => Self::bad_request(Some("model"), message),
            E::Ambiguous(_) => Self::bad_request(Some("model"), message),
            E::RepoNotFound { .. } | E::FileNotFound { .. } | E::RevisionNotFound { .. } => {
                Self::not_found("model_not_found", "model", message)
            }
            E::NotCached { .. } => Self::not_found("not_cached", "model", message),
            E::DiskFull { .. } => Self {
                code: Some("insufficient_storage"),
                ..Self::new(StatusCode::INSUFFICIENT_STORAGE, "server_error", message)
            },
            E::Unauthorized { .. } => Self::upstream("hub_unauthorized", message),
            E::ChecksumMismatch { .. } => Self::upstream("hub_checksum_mismatch", message),
            E::Network { .. } | E::Protocol { .. } => Self::upstream("hub_unreachable", message),
            // The cache on this machine: the operator's to fix, explained, not a crash.
            _ => Self::unavailable("model_cache_error", message),
        }
    }
}

impl From<tabagent_worker::WorkerError> for ApiError {
    fn from(err: tabagent_worker::WorkerError) -> Self {
        use tabagent_worker::WorkerError as E;
        let message = err.to_string();
        match err {
            E::InvalidInput(_) => Self::bad_request(None, message),
            E::ModelNotFound(_) => Self::not_found("model_not_found", "model", message),
            E::Unavailable(_) => Self {
                retry_after_secs: Some(2),
                ..Self::unavailable("worker_unavailable", message)
            },
            E::NotInstalled(_) => Self::unavailable("worker_feature_not_installed", message),
            E::Environment(_) => Self::unavailable("worker_not_set_up", message),
            E::Failed(_) => Self::internal(message),
        }
    }
}

impl From<crate::error::ServiceError> for ApiError {
    fn from(err: crate::error::ServiceError) -> Self {
        use crate::error::ServiceError as E;
        match err {
            E::Invalid { param, message } => Self::bad_request(param.as_deref(), message),
            no @ E::NoCapableProvider { param, .. } => {
                Self::bad_request(Some(param), no.to_string())
            }
            E::Unavailable { code, message } => Self::unavailable(code, message),
            E::Registry(err) => err.into(),
            E::Inference(err) => err.into(),
            E::Route(err) => err.into(),
            E::Refused(err) => err.into(),
            E::Memory(err) => err.into(),
            E::Worker(err) => err.into(),
            E::Internal(detail) => Self::internal(detail),
        }
    }
}
