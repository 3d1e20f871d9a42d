//! In-process llama.cpp inference.
//!
//! [`LlamaEngine::load`] checks a GGUF file with `tabagent_models::gguf` before llama.cpp reads it,
//! then starts one dedicated OS thread per loaded model. That thread owns the llama.cpp context and
//! runs continuous batching: every active sequence advances one token per `llama_decode`, new
//! prompts are prefilled in chunks alongside them, and each sequence streams
//! [`GenerationEvent`](tabagent_core::GenerationEvent)s through its own channel.
//!
//! **Boundary:** no HTTP, no wire formats; callers pass domain types from `tabagent-core`.
//! **Invariant:** llama.cpp is only called for files that passed validation, and never from a
//! tokio worker thread except for cheap, non-blocking vocabulary lookups.
#![deny(missing_docs)]

mod backend;
mod batcher;
mod config;
mod engine;
mod logprobs;
mod queue;
mod sampler;
mod schema;
mod text;

pub use config::EngineConfig;
pub use engine::{EngineStats, GenerationHandle, LlamaEngine, ModelFacts};
pub use queue::JobClass;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file failed validation; llama.cpp never saw it.
    #[error("{path} is not a valid GGUF model: {source}")]
    InvalidFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: tabagent_models::gguf::GgufError,
    },
    /// The engine settings are out of range.
    #[error("invalid engine settings: {0}")]
    InvalidConfig(String),
    /// The model's chat template cannot be compiled.
    #[error("the chat template of {path} is invalid: {message}")]
    InvalidTemplate {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// llama.cpp refused the file or the context (out of memory, unsupported architecture).
    #[error("llama.cpp could not load {path}: {message}")]
    Llama {
        /// The file.
        path: String,
        /// llama.cpp's reason, as far as it tells.
        message: String,
    },
}
