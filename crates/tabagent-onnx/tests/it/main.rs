//! Integration tests against the real ONNX Runtime library and real models.
//!
//! `TABAGENT_TEST_ORT_LIB` names the library (scripts/test fetches it from the onnxruntime wheel
//! and sets it, with `TABAGENT_TEST_MINILM_DIR` and `TABAGENT_TEST_MINILM_INT8_DIR`).

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod encoder;
mod onnx_model;
