//! The worker's errors, by what the caller should do about them.

/// An error from the worker or from running it.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The caller's input is unusable (not an image, no audio, an unknown task): a 400.
    #[error("{0}")]
    InvalidInput(String),
    /// No such model, or the model lacks a file the task needs: a 404.
    #[error("{0}")]
    ModelNotFound(String),
    /// The worker is not running (starting, restarting, or it failed to start): a 503.
    #[error("the ML worker is unavailable: {0}")]
    Unavailable(String),
    /// An optional part of the worker is not installed (Transformers): a 503 that says so.
    #[error("{0}")]
    NotInstalled(String),
    /// The worker failed at something that was not the caller's mistake.
    #[error("the ML worker failed: {0}")]
    Failed(String),
    /// Preparing the worker's environment failed (venv, pip, generated code).
    #[error("preparing the ML worker's environment failed: {0}")]
    Environment(String),
}

impl WorkerError {
    /// The error a gRPC status from the worker stands for.
    pub fn from_status(status: &tonic::Status) -> WorkerError {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                WorkerError::InvalidInput(message)
            }
            tonic::Code::NotFound => WorkerError::ModelNotFound(message),
            tonic::Code::FailedPrecondition => WorkerError::NotInstalled(message),
            tonic::Code::Unavailable => WorkerError::Unavailable(message),
            tonic::Code::Cancelled | tonic::Code::Unknown if is_disconnect(status) => {
                WorkerError::Unavailable(message)
            }
            _ => WorkerError::Failed(format!("{:?}: {message}", status.code())),
        }
    }

    /// Whether trying again once the worker is back may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WorkerError::Unavailable(_))
    }
}

/// A call cut off because the connection to the worker went away (it died mid-call).
fn is_disconnect(status: &tonic::Status) -> bool {
    let message = status.message().to_ascii_lowercase();
    [
        "connection",
        "broken pipe",
        "transport",
        "stream closed",
        "reset",
        "h2 protocol",
    ]
    .iter()
    .any(|m| message.contains(m))
}
