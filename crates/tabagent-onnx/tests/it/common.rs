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
        system_fallback: false,
        allowed_providers: Vec::new(),
        intra_threads: 0,
    };
    OnnxRuntime::get(&config).expect("ONNX Runtime loads")
}

/// all-MiniLM-L6-v2 as sentence-transformers publishes it (safetensors).
pub fn minilm_dir() -> PathBuf {
    env_path("TABAGENT_TEST_MINILM_DIR")
}

/// The same model quantized to int8 ONNX, with the same tokenizer.
pub fn minilm_int8_dir() -> PathBuf {
    env_path("TABAGENT_TEST_MINILM_INT8_DIR")
}

/// The tiny graphs shipped in the onnxruntime wheel.
pub fn ort_dataset(name: &str) -> PathBuf {
    env_path("TABAGENT_TEST_ORT_LIB")
        .parent()
        .expect("the library is in a directory")
        .join(name)
}

/// One reference case: a text, its token count and sentence-transformers' vector.
pub struct Golden {
    pub text: String,
    pub tokens: usize,
    pub embedding: Vec<f32>,
}

/// The reference vectors scripts/golden-embeddings wrote with sentence-transformers.
pub fn golden() -> Vec<Golden> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
    let text = std::fs::read_to_string(root.join("tests/golden/all-MiniLM-L6-v2.json"))
        .expect("golden file");
    let value: serde_json::Value = serde_json::from_str(&text).expect("golden JSON");
    value["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| Golden {
            text: case["text"].as_str().expect("text").to_string(),
            tokens: case["tokens"].as_u64().expect("tokens") as usize,
            embedding: case["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect(),
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vector widths differ");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}
