//! The one error every inference path returns, grouped by what the caller should do about it.

/// Why an inference request failed.
///
/// Variants are grouped so that a transport can map them without knowing the engine: the caller's
/// mistake (`InvalidRequest`, `Unsupported`, `ContextOverflow`), a busy or missing service
/// (`QueueFull`, `Unavailable`), or a fault of ours (`Internal`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// The request is malformed or out of range; `param` names the offending field.
    #[error("{message}")]
    InvalidRequest {
        /// The request field at fault, in the wire format's spelling, when one is.
        param: Option<String>,
        /// What is wrong, for the caller.
        message: String,
    },
    /// The request asks for something this engine or model cannot do.
    #[error("{message}")]
    Unsupported {
        /// The request field asking for it, when one does.
        param: Option<String>,
        /// What is not supported, for the caller.
        message: String,
    },
    /// The prompt does not fit in the context window.
    #[error("the prompt has {prompt_tokens} tokens but the context window holds {limit} (including at least one generated token)")]
    ContextOverflow {
        /// Tokens in the prompt after templating.
        prompt_tokens: u32,
        /// Tokens a sequence may hold.
        limit: u32,
    },
    /// Too many requests are waiting; try again later.
    #[error("the server is busy: {queued} requests are already waiting for this model")]
    QueueFull {
        /// Requests waiting when this one was turned away.
        queued: usize,
    },
    /// The request's deadline passed before it was answered; what was running is cancelled.
    #[error("the request's deadline passed {0}")]
    DeadlineExceeded(String),
    /// The engine cannot take requests now (stopped or failed).
    #[error("the engine is unavailable: {0}")]
    Unavailable(String),
    /// A fault inside the engine; the message is for logs, not for callers.
    #[error("internal engine error: {0}")]
    Internal(String),
}

impl InferenceError {
    /// An `InvalidRequest` naming `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    /// An `Unsupported` naming `param`.
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::Unsupported {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }
}
