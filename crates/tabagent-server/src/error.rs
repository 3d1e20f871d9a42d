//! The error of the server's own services (generation, embedding, memory context, the model's
//! own tasks), below any transport: each variant says what went wrong in terms of the part that
//! failed, and each transport maps it to its own shape (HTTP: `http::error::ApiError`).

use tabagent_core::InferenceError;

use crate::registry::RegistryError;

/// Why a service could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller's request is wrong; `param` names the part.
    #[error("{message}")]
    Invalid {
        /// The request field (or header) at fault.
        param: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Nothing serving the model can take what the request needs.
    #[error("no provider serving `{model}` can take this request: it needs the in-process engine or a remote engine with the `{capability}` capability (router.providers[].capabilities)")]
    NoCapableProvider {
        /// The model asked for.
        model: String,
        /// What it lacks (`tools`, `vision`).
        capability: &'static str,
        /// The request field that needs it.
        param: &'static str,
    },
    /// A part the request needs is off or not set up (`code` names it, for clients).
    #[error("{message}")]
    Unavailable {
        /// A stable, machine-readable name.
        code: &'static str,
        /// What is missing and how to turn it on.
        message: String,
    },
    /// The model could not be found or loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The engine refused or failed the generation.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// No provider could answer.
    #[error(transparent)]
    Route(#[from] tabagent_router::RouteError),
    /// The scheduler turned the request away (limits, a full queue, its deadline).
    #[error(transparent)]
    Refused(#[from] tabagent_router::Refused),
    /// The memory failed.
    #[error(transparent)]
    Memory(#[from] tabagent_memory::MemoryError),
    /// The ML worker failed.
    #[error(transparent)]
    Worker(#[from] tabagent_worker::WorkerError),
    /// A bug or a broken invariant in the server.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The caller's mistake in `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ServiceError {
        ServiceError::Invalid {
            param: param.map(str::to_string),
            message: message.into(),
        }
    }

    /// A broken invariant (a task that panicked, a channel closed early).
    pub fn internal(detail: impl std::fmt::Display) -> ServiceError {
        ServiceError::Internal(detail.to_string())
    }

    /// The memory is off.
    pub fn memory_off() -> ServiceError {
        ServiceError::Unavailable {
            code: "memory_disabled",
            message: "the memory is off (`memory.enabled = false`)".to_string(),
        }
    }

    /// This error as an engine's failure, for a stream that can only carry those.
    pub fn into_inference(self) -> InferenceError {
        match self {
            ServiceError::Inference(err) => err,
            ServiceError::Invalid { param, message } => {
                InferenceError::InvalidRequest { param, message }
            }
            ServiceError::Unavailable { message, .. } => InferenceError::Unavailable(message),
            other => InferenceError::Internal(other.to_string()),
        }
    }
}
