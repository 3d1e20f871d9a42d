use std::path::PathBuf;
use std::sync::Arc;

use tabagent_onnx::{OnnxRuntime, RuntimeConfig};

/// A required path from the environment; tests fail loudly rather than skip.
pub fn env_path(var: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .unwrap_or_else(|| panic!("{var} is not set; run the tests through scripts/test"));
    PathBuf::from(value)
}

/// The process's ONNX Runtime, from the wheel's library.
pub fn runtime() -> Arc<OnnxRuntime> {
    let config = RuntimeConfig {
        library_candidates: vec![env_path("TABAGENT_TEST_ORT_LIB")],
        allowed_providers: Vec::new(),
        intra_threads: 0,
    };
    OnnxRuntime::get(&config).expect("ONNX Runtime loads")
}

pub fn minilm_dir() -> PathBuf {
    env_path("TABAGENT_TEST_MINILM_DIR")
}
