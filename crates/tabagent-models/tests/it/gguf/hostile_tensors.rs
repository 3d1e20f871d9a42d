//! One hostile file per tensor-table and data-layout rule, each rejected with the right error.

use tabagent_models::gguf::{inspect_bytes, GgufError};

use super::builder::{valid_model, GgufBuilder, F16, F32, Q4_0, Q8_0};
use super::hostile_metadata::reject;

fn assert_invalid(bytes: &[u8], needle: &str) {
    match reject(bytes) {
        GgufError::Invalid { what } => assert!(what.contains(needle), "{what}"),
        other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
    }
}

fn assert_truncated(bytes: &[u8], needle: &str) {
    match reject(bytes) {
        GgufError::Truncated { what } => assert!(what.contains(needle), "{what}"),
        other => panic!("expected Truncated containing {needle:?}, got {other:?}"),
    }
}

/// A file with one tensor of `dims` and `ggml_type`, and enough data for a small tensor.
fn one_tensor(dims: &[u64], ggml_type: u32) -> Vec<u8> {
    let mut builder = GgufBuilder::new().tensor("t", dims, ggml_type);
    builder.data_len = Some(64);
    builder.build()
}

#[test]
fn too_many_dims_is_invalid() {
    assert_invalid(&one_tensor(&[1, 1, 1, 1, 1], F32), "has 5 dimensions");
    let ok = inspect_bytes(&one_tensor(&[1, 1, 1, 1], F32)).unwrap();
    assert_eq!(ok.tensors[0].dims, [1, 1, 1, 1]);
}

#[test]
fn zero_dims_is_invalid() {
    assert_invalid(&one_tensor(&[], F32), "has 0 dimensions");
}

#[test]
fn zero_dim_is_invalid() {
    assert_invalid(&one_tensor(&[4, 0], F32), "size 0 in dimension 1");
}

#[test]
fn overflowing_dims_are_invalid() {
    assert_invalid(&one_tensor(&[1 << 32, 1 << 32], F32), "overflows");
    assert_invalid(&one_tensor(&[u64::MAX], F32), "overflows");
    // 2^63 elements fit in a u64 but not in ggml's int64_t.
    assert_invalid(&one_tensor(&[1 << 32, 1 << 31], F32), "overflows");
}

#[test]
fn overflowing_byte_size_is_invalid() {
    // 2^62 f64 elements is a legal element count but 2^65 bytes.
    assert_invalid(
        &one_tensor(&[1 << 31, 1 << 31], 28),
        "byte size that overflows",
    );
}

#[test]
fn unknown_tensor_type_is_invalid() {
    for bad in [43, 1000, u32::MAX] {
        assert_invalid(
            &one_tensor(&[32], bad),
            &format!("unknown ggml type id {bad}"),
        );
    }
}

#[test]
fn removed_tensor_types_are_invalid() {
    for removed in [4, 5, 31, 32, 33, 36, 37, 38] {
        assert_invalid(&one_tensor(&[32], removed), "unsupported ggml type");
    }
    match reject(&one_tensor(&[32], 31)) {
        GgufError::Invalid { what } => assert!(what.contains("use Q4_0"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_not_a_multiple_of_the_block_size_is_invalid() {
    assert_invalid(
        &one_tensor(&[33, 2], Q4_0),
        "not a multiple of the block size 32",
    );
    assert_invalid(
        &one_tensor(&[16], Q8_0),
        "not a multiple of the block size 32",
    );
}

#[test]
fn misaligned_offset_is_invalid() {
    let bytes = GgufBuilder::new()
        .tensor("a", &[4], F32)
        .tensor_at("b", &[4], F32, 16)
        .build();
    assert_invalid(&bytes, "not a multiple of the alignment 32");
}

#[test]
fn data_beyond_eof_is_truncated() {
    let mut builder = valid_model();
    builder.data_len = Some(400);
    assert_truncated(&builder.build(), "the data of tensor 'output.weight'");
}

#[test]
fn offset_near_u64_max_is_invalid() {
    let bytes = GgufBuilder::new()
        .tensor_at("far", &[4], F32, !31u64)
        .build();
    assert_invalid(&bytes, "past the 64-bit range");
}

#[test]
fn offset_past_the_end_is_truncated() {
    let mut builder = GgufBuilder::new().tensor_at("far", &[4], F32, 1 << 40);
    builder.data_len = Some(64);
    assert_truncated(&builder.build(), "the data of tensor 'far'");
}

#[test]
fn overlapping_tensors_are_invalid() {
    let bytes = GgufBuilder::new()
        .tensor("a", &[16], F32)
        .tensor_at("b", &[8], F16, 32)
        .build();
    assert_invalid(&bytes, "tensors 'a' and 'b' overlap");
}

#[test]
fn tensors_out_of_table_order_are_invalid() {
    let bytes = GgufBuilder::new()
        .tensor_at("a", &[8], F32, 32)
        .tensor_at("b", &[8], F32, 0)
        .build();
    assert_invalid(&bytes, "packed in table order");
}

#[test]
fn gap_between_tensors_is_invalid() {
    let bytes = GgufBuilder::new()
        .tensor("a", &[8], F32)
        .tensor_at("b", &[8], F32, 64)
        .build();
    assert_invalid(&bytes, "llama.cpp expects 32");
}

#[test]
fn duplicate_tensor_names_are_invalid() {
    let bytes = valid_model().tensor("output.weight", &[8], F32).build();
    assert_invalid(&bytes, "'output.weight' appears more than once");
}

#[test]
fn empty_tensor_name_is_invalid() {
    assert_invalid(
        &GgufBuilder::new().tensor("", &[4], F32).build(),
        "empty name",
    );
}

#[test]
fn tensor_name_of_64_bytes_is_invalid() {
    let long = "n".repeat(64);
    assert_invalid(
        &GgufBuilder::new().tensor(&long, &[4], F32).build(),
        "name of 64 bytes",
    );
    let longest = "n".repeat(63);
    let info = inspect_bytes(&GgufBuilder::new().tensor(&longest, &[4], F32).build()).unwrap();
    assert_eq!(info.tensors[0].name, longest);
}

#[test]
fn non_utf8_tensor_name_is_invalid() {
    let bytes = GgufBuilder::new()
        .tensor_spec(b"blk.\xFF", &[4], F32, None)
        .build();
    assert_invalid(&bytes, "not UTF-8");
}

#[test]
fn missing_padding_before_data_is_truncated() {
    // Cut the file right after the tensor table, before the aligned start of the data section.
    let builder = GgufBuilder::new().tensor("a", &[1], F32);
    let header = builder.header_bytes();
    assert_ne!(header.len() % 32, 0, "test needs an unaligned header end");
    assert_truncated(&header, "the padding before the tensor data");
}

#[test]
fn tensor_table_the_remaining_bytes_cannot_hold_is_truncated() {
    // The header counts pass the first check, but a long string eats the bytes the table needs.
    let mut builder = GgufBuilder::new().kv_str("general.name", "x".repeat(400));
    builder.n_tensors = Some(10);
    assert_truncated(&builder.build(), "the tensor table (10 tensors");
}

#[test]
fn truncated_dims_name_the_tensor() {
    let mut bytes = GgufBuilder::new()
        .tensor("blk.3.attn_q.weight", &[4, 4], F32)
        .header_bytes();
    // Header, name, dimension count, first dimension and half of the second.
    bytes.truncate(24 + 8 + 19 + 4 + 8 + 4);
    assert_eq!(
        reject(&bytes).to_string(),
        "GGUF file is truncated while reading tensor 'blk.3.attn_q.weight' dims"
    );
}
