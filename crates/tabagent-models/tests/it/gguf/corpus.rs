//! The fuzzer's seed corpus in `fuzz/corpus/gguf_inspect/` is generated here from the builder.
//!
//! The test fails when a committed seed differs from what the builder makes now; run it with
//! `TABAGENT_UPDATE_FUZZ_CORPUS=1` to rewrite the seeds. Other files in that folder (inputs the
//! fuzzer found) are left alone.

use std::path::PathBuf;

use tabagent_models::gguf::inspect_bytes;

use super::builder::{tag, valid_model, Enc, GgufBuilder, F32, Q4_0};

const UPDATE_ENV: &str = "TABAGENT_UPDATE_FUZZ_CORPUS";
const MAX_SEED_BYTES: usize = 8 * 1024;

fn corpus_dir() -> PathBuf {
    // Read when the test runs, not baked in when it compiled: a build cache shared between
    // checkouts (CI's and a developer's) may hold a binary compiled in another one.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir.join("../../fuzz/corpus/gguf_inspect")
}

/// Name, bytes and whether the file is valid.
fn seeds() -> Vec<(&'static str, Vec<u8>, bool)> {
    let with = |f: fn(&mut GgufBuilder)| {
        let mut b = valid_model();
        f(&mut b);
        b.build()
    };
    vec![
        ("seed-valid-model.gguf", valid_model().build(), true),
        ("seed-valid-v2.gguf", with(|b| b.version = 2), true),
        (
            "seed-valid-align64.gguf",
            {
                let mut b = valid_model().kv_u32("general.alignment", 64);
                b.alignment = 64;
                b.build()
            },
            true,
        ),
        (
            "seed-valid-no-tensors.gguf",
            GgufBuilder::new()
                .kv_str("general.architecture", "llama")
                .kv_str_array("tokenizer.ggml.tokens", &["a", "b"])
                .build(),
            true,
        ),
        (
            "seed-valid-nested-array.gguf",
            GgufBuilder::new()
                .kv_raw(
                    "test.nested",
                    tag::ARRAY,
                    Enc::new()
                        .u32(tag::ARRAY)
                        .u64(1)
                        .u32(tag::U8)
                        .u64(2)
                        .raw(&[1, 2]),
                )
                .tensor("t", &[32], Q4_0)
                .build(),
            true,
        ),
        ("seed-bad-magic.gguf", with(|b| b.magic = *b"GGML"), false),
        ("seed-v1.gguf", with(|b| b.version = 1), false),
        (
            "seed-huge-tensor-count.gguf",
            with(|b| b.n_tensors = Some(u64::MAX)),
            false,
        ),
        (
            "seed-huge-string-len.gguf",
            GgufBuilder::new()
                .kv_raw(
                    "general.name",
                    tag::STRING,
                    Enc::new().u64(1 << 40).raw(b"x"),
                )
                .build(),
            false,
        ),
        (
            "seed-huge-array-len.gguf",
            GgufBuilder::new()
                .kv_raw(
                    "a",
                    tag::ARRAY,
                    Enc::new().u32(tag::U64).u64(1 << 29).u64(0),
                )
                .build(),
            false,
        ),
        (
            "seed-nested-too-deep.gguf",
            GgufBuilder::new()
                .kv_raw(
                    "a",
                    tag::ARRAY,
                    Enc::new().u32(tag::ARRAY).u64(1).u32(tag::ARRAY).u64(0),
                )
                .build(),
            false,
        ),
        (
            "seed-removed-type.gguf",
            GgufBuilder::new().tensor("t", &[32], 31).build(),
            false,
        ),
        (
            "seed-overlap.gguf",
            GgufBuilder::new()
                .tensor("a", &[16], F32)
                .tensor_at("b", &[8], F32, 32)
                .build(),
            false,
        ),
        (
            "seed-beyond-eof.gguf",
            with(|b| b.data_len = Some(100)),
            false,
        ),
        (
            "seed-misaligned.gguf",
            GgufBuilder::new()
                .tensor("a", &[4], F32)
                .tensor_at("b", &[4], F32, 20)
                .build(),
            false,
        ),
    ]
}

#[test]
fn fuzz_seed_corpus_matches_the_builder() {
    let dir = corpus_dir();
    let update = std::env::var_os(UPDATE_ENV).is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes, valid) in seeds() {
        assert!(
            bytes.len() <= MAX_SEED_BYTES,
            "{name} is {} bytes",
            bytes.len()
        );
        assert_eq!(inspect_bytes(&bytes).is_ok(), valid, "{name}");
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with {UPDATE_ENV}=1 to write the seeds",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{} is stale; run with {UPDATE_ENV}=1 to rewrite the seeds",
            path.display()
        );
    }
}
