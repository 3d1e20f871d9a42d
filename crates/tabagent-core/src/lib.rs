//! Domain types shared by every tabagent crate.
//!
//! This crate does no IO and knows nothing of HTTP, llama.cpp or files: it is the vocabulary the
//! engines, the stores and the server speak. Wire formats (OpenAI JSON) live in `tabagent-server`
//! and convert into these types explicitly.
//!
//! ```
//! use tabagent_core::stop::StopMatcher;
//! let mut stop = StopMatcher::new(vec!["END".to_string()]);
//! let step = stop.push("hello EN");
//! assert_eq!(step.emit, "hello ");
//! let step = stop.push("D world");
//! assert!(step.matched);
//! assert_eq!(step.emit, "");
//! ```
#![deny(missing_docs)]

pub mod calendar;
pub mod chat;
pub mod error;
pub mod generation;
pub mod secret;
pub mod stop;
pub mod tools;

pub use chat::{ChatMessage, ImagePart, Role, ToolCall};
pub use error::InferenceError;
pub use generation::{
    FinishReason, GenerationEvent, GenerationParams, OutputConstraint, SamplingParams, Timings,
    TokenLogprob, TopLogprob, Usage, MAX_TOP_LOGPROBS,
};
pub use secret::{Secret, SecretUrl};
pub use tools::{ToolCallAssembler, ToolCallDelta, ToolChoice, ToolSpec, Tools};
