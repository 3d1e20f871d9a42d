//! In-process ONNX Runtime for tabagent.
//!
//! - [`runtime`]: the ONNX Runtime library (loaded at run time), its environment and the
//!   execution providers, chosen in a fixed order of preference with a reason for each one that
//!   cannot run here.
//! - [`model`]: any `.onnx` model: its inputs and outputs, and runs on named tensors over a
//!   pool of sessions.
//! - [`encoder`]: text encoders (sentence embeddings) from safetensors or ONNX, with a
//!   `tokenizer.json` ([`text`]) and dynamic batching ([`batcher`]).
//! - [`bert`]: BERT encoders in safetensors compiled into ONNX graphs ([`graph`], [`proto`]).

pub mod batcher;
pub mod bert;
pub mod encoder;
pub mod graph;
pub mod model;
pub mod proto;
pub mod runtime;
pub mod text;

pub use batcher::BatchLimits;
pub use bert::Precision;
pub use encoder::{EncodeError, EncoderInfo, EncoderModel, EncoderSettings, GraphSource, Pooling};
pub use model::{NamedTensor, OnnxModel, RunError, TensorData, TensorInfo};
pub use runtime::{OnnxRuntime, Provider, ProviderStatus, RuntimeConfig, RuntimeError};
pub use text::{Encoded, Piece, TextTokenizer};

use std::path::Path;

/// Why a model could not be loaded or its text handled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        reason: String,
    },
    /// A file is malformed or disagrees with the others.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The model is of a kind this engine does not run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// ONNX Runtime refused the model.
    #[error("ONNX Runtime could not load {path}: {reason}")]
    Runtime {
        /// The model.
        path: String,
        /// Its words.
        reason: String,
    },
    /// ONNX Runtime itself is not available.
    #[error(transparent)]
    NoRuntime(#[from] RuntimeError),
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl ModelError {
    pub(crate) fn io(path: &Path, err: std::io::Error) -> Self {
        ModelError::Io {
            path: path.display().to_string(),
            reason: err.to_string(),
        }
    }
}
