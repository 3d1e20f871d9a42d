//! Model files for tabagent.
//!
//! It holds [`store`], the local model store; [`chat_template`], the sandboxed renderer of the
//! templates model files carry; and [`gguf`], a strict validator and inspector for GGUF model files that runs
//! before llama.cpp ever sees a file: a truncated or hostile file becomes a typed [`gguf::GgufError`],
//! never a panic, an out-of-memory abort or a hang.
//!
//! ```no_run
//! let info = tabagent_models::gguf::inspect_file(std::path::Path::new("model.gguf"))?;
//! println!("{:?} with {} tensors", info.architecture(), info.tensors.len());
//! # Ok::<(), tabagent_models::gguf::GgufError>(())
//! ```
#![deny(missing_docs)]

pub mod chat_template;
pub mod gguf;
pub mod store;
pub mod tool_calls;
