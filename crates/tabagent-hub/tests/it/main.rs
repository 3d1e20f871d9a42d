//! Downloads from a Hub stand-in on a real loopback socket, serving the real SmolLM2 file.
//!
//! The model path comes from `TABAGENT_TEST_SMOLLM2_GGUF` (`scripts/test` fetches it and sets it).

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod download;
mod support;
