//! Files that are well-formed GGUF but break what llama.cpp assumes of a model (and asserts,
//! aborting the process): each refused with the rule it broke. And the real models pass.

use std::path::PathBuf;

use tabagent_models::gguf::{inspect_bytes, inspect_file, GgufError};

use super::builder::{tag, valid_model, Enc, GgufBuilder, F32};

fn refused(builder: GgufBuilder, needle: &str) {
    match inspect_bytes(&builder.build()) {
        Err(GgufError::Invalid { what }) => assert!(what.contains(needle), "{what}"),
        other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
    }
}

fn accepted(builder: GgufBuilder) {
    if let Err(err) = inspect_bytes(&builder.build()) {
        panic!("refused a sound file: {err}");
    }
}

/// `valid_model`'s metadata with a vocabulary and embedding of its own.
fn with_vocabulary(tokens: &[&str], types: &[u32], embedding_rows: u64) -> GgufBuilder {
    GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .kv_str_array("tokenizer.ggml.tokens", tokens)
        .kv_u32_array("tokenizer.ggml.token_type", types)
        .tensor("token_embd.weight", &[8, embedding_rows], F32)
}

#[test]
fn a_vocabulary_llama_cpp_cannot_hold_is_refused() {
    // The same token twice: llama.cpp asserts that its token-to-id map is as big as its list.
    refused(
        with_vocabulary(&["<s>", "hello", "world", "hello"], &[3, 1, 1, 1], 4),
        "twice, as ids 1 and 3",
    );
    // Arrays per token of another length than the vocabulary.
    refused(
        with_vocabulary(&["<s>", "</s>", "hello", "world"], &[3, 3, 1], 4),
        "tokenizer.ggml.token_type has 3 entries",
    );
    // An embedding with a row per token of another vocabulary.
    refused(
        with_vocabulary(&["<s>", "</s>", "hello", "world"], &[3, 3, 1, 1], 5),
        "token_embd.weight has 5 rows",
    );
    // A special token outside the vocabulary; a negative one means none.
    refused(
        valid_model().kv_u32("tokenizer.ggml.eos_token_id", 4),
        "tokenizer.ggml.eos_token_id is 4",
    );
    refused(
        valid_model().kv_str("tokenizer.ggml.bos_token_id", "1"),
        "must be an integer token id",
    );
    accepted(valid_model().kv_i32("tokenizer.ggml.padding_token_id", -1));
    accepted(valid_model().kv_u32("tokenizer.ggml.eos_token_id", 3));
}

fn i32_array(builder: GgufBuilder, key: &str, values: &[i32]) -> GgufBuilder {
    let mut value = Enc::new().u32(tag::I32).u64(values.len() as u64);
    for v in values {
        value = value.raw(&v.to_le_bytes());
    }
    builder.kv_raw(key, tag::ARRAY, value)
}

#[test]
fn layers_heads_and_experts_llama_cpp_asserts_on_are_refused() {
    refused(
        valid_model().kv_u32("llama.block_count", 0),
        "llama.block_count is 0",
    );
    refused(
        valid_model().kv_u32("llama.block_count", 513),
        "must be 1 to 512",
    );
    refused(
        valid_model()
            .kv_u32("llama.block_count", 2)
            .kv_u32("llama.nextn_predict_layers", 3),
        "llama.nextn_predict_layers is 3",
    );
    // The embedding width is divided by the first layer's head count.
    refused(
        valid_model().kv_u32("llama.attention.head_count", 0),
        "llama.attention.head_count starts with 0",
    );
    refused(
        i32_array(valid_model(), "llama.attention.head_count", &[0, 8]),
        "starts with 0",
    );
    accepted(i32_array(
        valid_model(),
        "llama.attention.head_count",
        &[8, 0],
    ));
    // Experts: as many used as there are, at least one; groups only with experts.
    let experts = |count: u32| valid_model().kv_u32("llama.expert_count", count);
    refused(
        experts(8).kv_u32("llama.expert_used_count", 9),
        "llama.expert_used_count must be 1 to the 8 experts",
    );
    refused(
        experts(8).kv_u32("llama.expert_used_count", 0),
        "llama.expert_used_count must be 1",
    );
    refused(
        i32_array(experts(8), "llama.expert_used_count", &[2, 9]),
        "in every layer",
    );
    refused(
        experts(1025).kv_u32("llama.expert_used_count", 2),
        "at most 1024",
    );
    refused(
        experts(0).kv_u32("llama.expert_group_count", 2),
        "with no experts",
    );
    refused(
        experts(8)
            .kv_u32("llama.expert_used_count", 2)
            .kv_u32("llama.expert_group_count", 3)
            .kv_u32("llama.expert_group_used_count", 1),
        "the groups must divide the experts",
    );
    accepted(experts(8).kv_u32("llama.expert_used_count", 2));
    accepted(
        experts(8)
            .kv_u32("llama.expert_used_count", 2)
            .kv_u32("llama.expert_group_count", 4)
            .kv_u32("llama.expert_group_used_count", 2),
    );
}

#[test]
fn every_real_model_the_tests_use_passes() {
    for var in [
        "TABAGENT_TEST_SMOLLM2_GGUF",
        "TABAGENT_TEST_GEMMA_GGUF",
        "TABAGENT_TEST_QWEN_GGUF",
    ] {
        let path = PathBuf::from(
            std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: run scripts/test")),
        );
        if let Err(err) = inspect_file(&path) {
            panic!("{}: {err}", path.display());
        }
    }
}
