//! One hostile file per header and metadata rule, each rejected with the right error.

use tabagent_models::gguf::{inspect_bytes, GgufError, MAX_ARRAY_LEN, MAX_KV, MAX_TENSORS};

use super::alloc_probe::largest_allocation;
use super::builder::{tag, valid_model, Enc, GgufBuilder};

/// The error `bytes` must be rejected with; also checks it is a one-line message.
pub fn reject(bytes: &[u8]) -> GgufError {
    let err = inspect_bytes(bytes).expect_err("hostile input was accepted");
    let message = err.to_string();
    assert!(!message.contains('\n'), "multi-line message: {message}");
    err
}

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

fn assert_limit(bytes: &[u8], needle: &str, expected_value: u64) {
    match reject(bytes) {
        GgufError::LimitExceeded { what, value, .. } => {
            assert!(what.contains(needle), "{what}");
            assert_eq!(value, expected_value);
        }
        other => panic!("expected LimitExceeded containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn bad_magic_is_not_gguf() {
    let mut builder = valid_model();
    builder.magic = *b"GGML";
    let err = reject(&builder.build());
    assert!(matches!(err, GgufError::NotGguf), "{err:?}");
    assert_eq!(err.to_string(), "not a GGUF file (bad magic)");
    assert!(matches!(reject(b"PK\x03\x04 zip"), GgufError::NotGguf));
    assert!(matches!(reject(b"G"), GgufError::Truncated { .. }));
    assert!(matches!(reject(b"x"), GgufError::NotGguf));
}

#[test]
fn version_1_is_unsupported() {
    for version in [0, 1, 4, 0xFFFF_FFFF] {
        let mut builder = valid_model();
        builder.version = version;
        let err = reject(&builder.build());
        assert!(
            matches!(err, GgufError::UnsupportedVersion(v) if v == version),
            "{err:?}"
        );
    }
}

#[test]
fn big_endian_file_gets_a_byte_order_error() {
    let mut builder = valid_model();
    builder.version = 3u32.swap_bytes();
    let err = reject(&builder.build());
    assert!(matches!(err, GgufError::BigEndian(0x0300_0000)), "{err:?}");
    assert!(err.to_string().contains("big-endian"), "{err}");
}

#[test]
fn huge_tensor_count_exceeds_the_limit() {
    let mut builder = valid_model();
    builder.n_tensors = Some(u64::MAX);
    assert_limit(&builder.build(), "tensor count", u64::MAX);
    builder.n_tensors = Some(MAX_TENSORS + 1);
    assert_limit(&builder.build(), "tensor count", MAX_TENSORS + 1);
}

#[test]
fn tensor_count_the_file_cannot_hold_is_truncated() {
    let mut builder = valid_model();
    builder.n_tensors = Some(MAX_TENSORS);
    let bytes = builder.build();
    let (err, largest) = largest_allocation(|| reject(&bytes));
    assert!(matches!(err, GgufError::Truncated { .. }), "{err:?}");
    assert!(largest < 4096, "allocated {largest} bytes for a claim");
}

#[test]
fn huge_kv_count_exceeds_the_limit() {
    let mut builder = valid_model();
    builder.n_kv = Some(1 << 62);
    assert_limit(&builder.build(), "metadata count", 1 << 62);
    builder.n_kv = Some(MAX_KV);
    assert_truncated(&builder.build(), "key-value pairs");
}

#[test]
fn huge_key_length_exceeds_the_limit() {
    let entry = Enc::new().u64(1 << 40).raw(b"general.name");
    let mut builder = GgufBuilder::new();
    builder.kvs.push(entry.bytes());
    assert_limit(&builder.build(), "key of metadata entry 0", 1 << 40);
}

#[test]
fn key_longer_than_the_file_is_truncated() {
    let entry = Enc::new().u64(60_000).raw(b"general.name\x04\0\0\0");
    let mut builder = GgufBuilder::new();
    builder.kvs.push(entry.bytes());
    assert_truncated(&builder.build(), "key of metadata entry 0");
}

#[test]
fn empty_key_is_invalid() {
    let bytes = GgufBuilder::new().kv_u32("", 1).build();
    assert_invalid(&bytes, "empty key");
}

#[test]
fn non_utf8_key_is_invalid() {
    let bytes = GgufBuilder::new()
        .kv_raw(b"general.\xFFname", tag::U32, Enc::new().u32(1))
        .build();
    assert_invalid(&bytes, "not UTF-8");
}

#[test]
fn duplicate_key_is_invalid() {
    let bytes = valid_model().kv_str("general.name", "again").build();
    assert_invalid(&bytes, "'general.name' appears more than once");
}

#[test]
fn huge_string_value_exceeds_the_limit() {
    let bytes = GgufBuilder::new()
        .kv_raw("general.name", tag::STRING, Enc::new().u64(u64::MAX))
        .build();
    let (err, largest) = largest_allocation(|| reject(&bytes));
    assert!(
        matches!(&err, GgufError::LimitExceeded { value, .. } if *value == u64::MAX),
        "{err:?}"
    );
    assert!(largest < 4096, "allocated {largest} bytes for a claim");
}

#[test]
fn string_value_longer_than_the_file_is_truncated() {
    let bytes = GgufBuilder::new()
        .kv_raw(
            "general.name",
            tag::STRING,
            Enc::new().u64(1_000_000).raw(b"abc"),
        )
        .build();
    assert_truncated(&bytes, "value of key 'general.name'");
}

#[test]
fn non_utf8_chat_template_is_invalid() {
    let bytes = GgufBuilder::new()
        .kv_str("tokenizer.chat_template", b"{{ \xC0\x80 }}")
        .build();
    assert_invalid(&bytes, "'tokenizer.chat_template' is not UTF-8");
    let bytes = GgufBuilder::new()
        .kv_str("general.architecture", b"ll\xFFama")
        .build();
    assert_invalid(&bytes, "'general.architecture' is not UTF-8");
}

#[test]
fn architecture_that_is_not_a_string_is_invalid() {
    let bytes = GgufBuilder::new().kv_u32("general.architecture", 7).build();
    assert_invalid(&bytes, "must be a string but is uint32");
}

#[test]
fn unknown_value_type_tag_is_invalid() {
    for bad in [13, 0xFFFF_FFFF] {
        let bytes = GgufBuilder::new()
            .kv_raw("test.bad", bad, Enc::new().u64(0))
            .build();
        assert_invalid(&bytes, &format!("unknown value type {bad}"));
    }
}

#[test]
fn unknown_array_element_type_is_invalid() {
    let bytes = GgufBuilder::new()
        .kv_raw("test.bad", tag::ARRAY, Enc::new().u32(13).u64(1).u8(0))
        .build();
    assert_invalid(&bytes, "unknown array element type 13");
}

#[test]
fn invalid_bool_is_invalid() {
    let bytes = GgufBuilder::new()
        .kv_raw("test.flag", tag::BOOL, Enc::new().u8(2))
        .build();
    assert_invalid(&bytes, "bool value 2");
}

#[test]
fn huge_array_length_exceeds_the_limit() {
    let value = Enc::new().u32(tag::U8).u64(1 << 60).raw(&[0; 64]);
    let bytes = GgufBuilder::new()
        .kv_raw("test.big", tag::ARRAY, value)
        .build();
    let (err, largest) = largest_allocation(|| reject(&bytes));
    assert!(
        matches!(&err, GgufError::LimitExceeded { value, limit, .. }
            if *value == 1 << 60 && *limit == MAX_ARRAY_LEN),
        "{err:?}"
    );
    assert!(largest < 4096, "allocated {largest} bytes for a claim");
}

#[test]
fn array_longer_than_the_file_is_truncated() {
    for element in [tag::U8, tag::U64, tag::STRING, tag::ARRAY] {
        let value = Enc::new().u32(element).u64(MAX_ARRAY_LEN).raw(&[0; 64]);
        let bytes = GgufBuilder::new()
            .kv_raw("test.big", tag::ARRAY, value)
            .build();
        let (err, largest) = largest_allocation(|| reject(&bytes));
        assert!(matches!(err, GgufError::Truncated { .. }), "{err:?}");
        assert!(largest < 4096, "allocated {largest} bytes for a claim");
    }
}

#[test]
fn huge_string_inside_an_array_exceeds_the_limit() {
    let value = Enc::new()
        .u32(tag::STRING)
        .u64(2)
        .str("ok")
        .u64(1 << 50)
        .raw(b"tail");
    let bytes = GgufBuilder::new()
        .kv_raw("tokenizer.ggml.tokens", tag::ARRAY, value)
        .build();
    assert_limit(&bytes, "string 1 of the array value", 1 << 50);
}

#[test]
fn arrays_nested_two_levels_are_invalid() {
    let value = Enc::new()
        .u32(tag::ARRAY)
        .u64(1)
        .u32(tag::ARRAY)
        .u64(1)
        .u32(tag::U8)
        .u64(1)
        .u8(0);
    let bytes = GgufBuilder::new()
        .kv_raw("test.deep", tag::ARRAY, value)
        .build();
    assert_invalid(&bytes, "nested more than 1 level deep");
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for bad in [0, 3, 48, 0x8000_0001] {
        let bytes = valid_model().kv_u32("general.alignment", bad).build();
        assert_invalid(&bytes, "not a power of two");
    }
}

#[test]
fn alignment_must_be_a_uint32() {
    let bytes = valid_model().kv_u64("general.alignment", 32).build();
    assert_invalid(&bytes, "must be a uint32 but is uint64");
}

#[test]
fn truncated_error_message_names_what_was_being_read() {
    let bytes = GgufBuilder::new()
        .kv_raw("general.name", tag::STRING, Enc::new().u64(10).raw(b"abc"))
        .build();
    assert_eq!(
        reject(&bytes).to_string(),
        "GGUF file is truncated while reading the value of key 'general.name' \
         (10 bytes declared, 3 left in the file)"
    );
}
