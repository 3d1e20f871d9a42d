//! Integration tests: the real `tabagent` binary, the real SmolLM2 model, real HTTP.
//!
//! The model path comes from `TABAGENT_TEST_SMOLLM2_GGUF` (`scripts/test` fetches it and sets it).

mod api;
mod base_model;
mod cli;
mod errors;
mod security;
mod server;
mod streaming;
