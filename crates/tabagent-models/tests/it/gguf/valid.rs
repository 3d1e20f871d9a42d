//! Valid files parse, with the values that were written.

use std::io::Write;

use tabagent_models::gguf::{
    inspect_bytes, inspect_file, GgufError, MetadataValue, ValueType, DEFAULT_ALIGNMENT,
};

use super::alloc_probe::largest_allocation;
use super::builder::{tag, valid_model, Enc, GgufBuilder, CHAT_TEMPLATE, F32, Q4_0};

#[test]
fn valid_model_parses_with_the_values_written() {
    let builder = valid_model();
    let bytes = builder.build();
    let info = inspect_bytes(&bytes).unwrap();

    assert_eq!(info.version, 3);
    assert_eq!(info.file_size, bytes.len() as u64);
    assert_eq!(info.alignment, DEFAULT_ALIGNMENT);
    assert_eq!(info.data_offset, builder.data_offset());
    assert_eq!(info.data_offset % 32, 0);

    assert_eq!(info.architecture(), Some("llama"));
    assert_eq!(info.name(), Some("tiny test model"));
    assert_eq!(info.chat_template(), Some(CHAT_TEMPLATE));
    assert_eq!(info.context_length(), Some(2048));
    assert_eq!(info.get_u64("general.parameter_count"), Some(1234));
    assert_eq!(
        info.get("llama.rope.scaling"),
        Some(&MetadataValue::I32(-3))
    );
    assert_eq!(
        info.get_u64("llama.rope.scaling"),
        None,
        "negative is not a u64"
    );
    assert_eq!(
        info.get("llama.rope.freq_base"),
        Some(&MetadataValue::F32(10000.0))
    );
    assert_eq!(
        info.get("tokenizer.ggml.add_bos_token"),
        Some(&MetadataValue::Bool(true))
    );
    assert_eq!(
        info.get("tokenizer.ggml.tokens"),
        Some(&MetadataValue::Array {
            element_type: ValueType::String,
            len: 4
        })
    );
    assert_eq!(
        info.get("tokenizer.ggml.token_type"),
        Some(&MetadataValue::Array {
            element_type: ValueType::U32,
            len: 4
        })
    );
    assert_eq!(info.get_str("llama.context_length"), None, "not a string");
    assert_eq!(info.get("missing"), None);
    assert_eq!(info.metadata.len(), 10);
    assert_eq!(
        info.metadata[0].0, "general.architecture",
        "file order kept"
    );

    let summary: Vec<_> = info
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.type_name, t.offset, t.size_bytes))
        .collect();
    assert_eq!(
        summary,
        [
            ("token_embd.weight", "f32", 0, 8 * 4 * 4),
            ("blk.0.attn_q.weight", "f16", 128, 8 * 8 * 2),
            ("blk.0.ffn_up.weight", "q4_0", 256, 128 / 32 * 18),
            ("output.weight", "q8_0", 352, 96 / 32 * 34),
        ]
    );
    assert_eq!(info.tensors[2].dims, [64, 2]);
    assert_eq!(info.tensors[2].ggml_type, Q4_0);
    assert_eq!(info.tensors[3].n_elements(), 96);
    assert_eq!(info.tensor_data_bytes(), 128 + 128 + 72 + 102);
    assert_eq!(
        info.data_offset + 352 + 102,
        info.file_size,
        "no tail padding"
    );
}

#[test]
fn version_2_parses_like_version_3() {
    let mut builder = valid_model();
    builder.version = 2;
    let info = inspect_bytes(&builder.build()).unwrap();
    assert_eq!(info.version, 2);
    assert_eq!(info.tensors.len(), 4);
}

#[test]
fn file_without_tensors_has_its_data_section_at_the_header_end() {
    let bytes = GgufBuilder::new()
        .kv_str("general.architecture", "llama")
        .build();
    let info = inspect_bytes(&bytes).unwrap();
    assert!(info.tensors.is_empty());
    assert_eq!(info.data_offset, bytes.len() as u64);
    assert_eq!(info.tensor_data_bytes(), 0);
    assert_eq!(info.context_length(), None);
}

#[test]
fn empty_header_is_a_valid_file() {
    let info = inspect_bytes(&GgufBuilder::new().build()).unwrap();
    assert!(info.metadata.is_empty() && info.tensors.is_empty());
    assert_eq!(info.architecture(), None);
}

#[test]
fn custom_alignment_moves_the_data_section() {
    let mut builder = valid_model().kv_u32("general.alignment", 64);
    builder.alignment = 64;
    let info = inspect_bytes(&builder.build()).unwrap();
    assert_eq!(info.alignment, 64);
    assert_eq!(info.data_offset % 64, 0);
    let offsets: Vec<u64> = info.tensors.iter().map(|t| t.offset).collect();
    assert_eq!(offsets, [0, 128, 256, 384]);
}

#[test]
fn arrays_nested_one_level_are_accepted() {
    let inner = Enc::new()
        .u32(tag::ARRAY)
        .u64(2)
        .u32(tag::U8)
        .u64(3)
        .raw(&[1, 2, 3])
        .u32(tag::STRING)
        .u64(1)
        .str("x");
    let bytes = GgufBuilder::new()
        .kv_raw("test.nested", tag::ARRAY, inner)
        .build();
    let info = inspect_bytes(&bytes).unwrap();
    assert_eq!(
        info.get("test.nested"),
        Some(&MetadataValue::Array {
            element_type: ValueType::Array,
            len: 2
        })
    );
}

#[test]
fn integers_of_every_width_read_as_u64() {
    let bytes = GgufBuilder::new()
        .kv_raw("a", 0, Enc::new().u8(7))
        .kv_raw("b", 1, Enc::new().u8(0xFF))
        .kv_raw("c", 2, Enc::new().raw(&500u16.to_le_bytes()))
        .kv_raw("d", 3, Enc::new().raw(&(-2i16).to_le_bytes()))
        .kv_raw("e", 11, Enc::new().raw(&(1i64 << 40).to_le_bytes()))
        .kv_raw("f", 12, Enc::new().u64(2.5f64.to_bits()))
        .build();
    let info = inspect_bytes(&bytes).unwrap();
    assert_eq!(info.get_u64("a"), Some(7));
    assert_eq!(info.get("b"), Some(&MetadataValue::I8(-1)));
    assert_eq!(info.get_u64("b"), None);
    assert_eq!(info.get_u64("c"), Some(500));
    assert_eq!(info.get("d"), Some(&MetadataValue::I16(-2)));
    assert_eq!(info.get_u64("e"), Some(1 << 40));
    assert_eq!(info.get("f"), Some(&MetadataValue::F64(2.5)));
    assert_eq!(info.get_u64("f"), None);
}

#[test]
fn ordinary_string_values_are_decoded_lossily() {
    let bytes = GgufBuilder::new()
        .kv_str("general.description", b"caf\xE9")
        .build();
    let info = inspect_bytes(&bytes).unwrap();
    assert_eq!(info.get_str("general.description"), Some("caf\u{FFFD}"));
}

#[test]
fn inspect_file_reads_the_same_as_inspect_bytes() {
    let bytes = valid_model().build();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    let from_file = inspect_file(file.path()).unwrap();
    assert_eq!(from_file, inspect_bytes(&bytes).unwrap());
}

#[test]
fn inspect_file_reports_a_missing_file_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.gguf");
    let err = inspect_file(&path).unwrap_err();
    assert!(matches!(err, GgufError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.gguf"), "{err}");
}

#[test]
fn inspect_file_rejects_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = inspect_file(dir.path()).unwrap_err();
    assert!(matches!(err, GgufError::Invalid { .. }), "{err:?}");
}

#[test]
fn parsing_allocates_nothing_large() {
    let bytes = valid_model().tensor("extra", &[4], F32).build();
    let (info, largest) = largest_allocation(|| inspect_bytes(&bytes));
    assert_eq!(info.unwrap().tensors.len(), 5);
    assert!(largest < 4096, "largest allocation was {largest} bytes");
}
