//! Integration tests: the real `tabagent` binary, the real SmolLM2 model, real HTTP.
//!
//! The model path comes from `TABAGENT_TEST_SMOLLM2_GGUF` (`scripts/test` fetches it and sets it).

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent;
mod api;
mod base_model;
mod browser;
mod cache;
mod cli;
mod context;
mod documents;
mod durability;
mod embeddings;
mod errors;
mod events;
mod knowledge;
mod lifecycle;
mod limits;
mod memory;
mod memory_api;
mod native;
mod onnx;
mod passthrough;
mod probe;
mod pull;
mod routing;
mod scheduler;
mod secrets;
mod security;
mod server;
mod sessions;
mod streaming;
mod surprise;
mod tidy;
mod tokenize;
mod webrtc;
mod worker;
