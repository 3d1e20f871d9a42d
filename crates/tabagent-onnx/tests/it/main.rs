//! Integration tests against the real ONNX Runtime library and real models.
//!
//! `TABAGENT_TEST_ORT_LIB` names the library (scripts/test fetches it from the onnxruntime wheel
//! and sets it, with `TABAGENT_TEST_MINILM_DIR` and `TABAGENT_TEST_ORT_DATASETS`).

mod common;
mod encoder;
mod onnx_model;
