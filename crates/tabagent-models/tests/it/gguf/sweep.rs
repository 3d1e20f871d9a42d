//! Truncation at every byte and a seeded mutation sweep: never a panic, and an `Ok` always keeps
//! every tensor inside the file.

use std::collections::HashSet;

use tabagent_models::gguf::{inspect_bytes, GgufError, GgufInfo};

use super::builder::{valid_model, GgufBuilder, F32};

/// The promises an `Ok` makes, checked from the outside. Returns what broke.
pub fn broken_invariant(bytes: &[u8], info: &GgufInfo) -> Option<String> {
    let len = bytes.len() as u64;
    if info.file_size != len {
        return Some(format!("file_size {} != {len}", info.file_size));
    }
    if !info.alignment.is_power_of_two() {
        return Some(format!("alignment {}", info.alignment));
    }
    if info.data_offset > len && !info.tensors.is_empty() {
        return Some(format!("data_offset {} past the end", info.data_offset));
    }
    let mut ranges = Vec::new();
    let mut names = HashSet::new();
    for t in &info.tensors {
        let start = info.data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= len && s % info.alignment == 0 => ranges.push((s, e)),
            _ => return Some(format!("tensor {:?} outside the file", t.name)),
        }
        if t.dims.is_empty() || t.dims.len() > 4 || t.dims.contains(&0) {
            return Some(format!("tensor {:?} dims {:?}", t.name, t.dims));
        }
        if t.name.is_empty() || t.name.len() > 63 || !names.insert(t.name.as_str()) {
            return Some(format!("tensor name {:?}", t.name));
        }
    }
    ranges.sort_unstable();
    if ranges.windows(2).any(|w| w[0].1 > w[1].0) {
        return Some("tensor ranges overlap".into());
    }
    None
}

#[test]
fn every_strict_prefix_of_a_valid_file_is_truncated() {
    let bytes = valid_model().build();
    for n in 0..bytes.len() {
        match inspect_bytes(&bytes[..n]) {
            Err(GgufError::Truncated { .. }) => {}
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
    assert!(inspect_bytes(&bytes).is_ok());
}

/// xorshift64*: a tiny deterministic PRNG, so the sweep is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    31,
    32,
    64,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let pos = rng.below(bytes.len());
        match rng.below(7) {
            0 => {
                if let Some(b) = bytes.get_mut(pos) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(b) = bytes.get_mut(pos) {
                    *b = rng.next() as u8;
                }
            }
            2 | 3 => {
                let value = if rng.below(4) == 0 {
                    rng.next()
                } else {
                    INTERESTING[rng.below(INTERESTING.len())]
                };
                let width = if rng.below(2) == 0 { 8 } else { 4 };
                let le = value.to_le_bytes();
                for (i, b) in le.iter().take(width).enumerate() {
                    if let Some(slot) = bytes.get_mut(pos + i) {
                        *slot = *b;
                    }
                }
            }
            4 => bytes.truncate(pos),
            5 => {
                let n = 1 + rng.below(16);
                let end = (pos + n).min(bytes.len());
                bytes.drain(pos..end);
            }
            _ => {
                // Splice: copy a random chunk of the seed to a random place.
                let from = rng.below(seed.len());
                let n = 1 + rng.below(32);
                let chunk: Vec<u8> = seed.iter().skip(from).take(n).copied().collect();
                let at = pos.min(bytes.len());
                bytes.splice(at..at, chunk);
            }
        }
    }
    bytes
}

#[test]
fn seeded_mutations_never_panic_and_ok_keeps_tensors_in_the_file() {
    let seeds = [
        valid_model().build(),
        {
            let mut b = valid_model().kv_u32("general.alignment", 64);
            b.alignment = 64;
            b.build()
        },
        GgufBuilder::new()
            .tensor("a", &[1], F32)
            .tensor("b", &[3], F32)
            .build(),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut oks, mut errs) = (0u32, 0u32);
    for round in 0..6000 {
        let seed = &seeds[round % seeds.len()];
        let bytes = mutate(&mut rng, seed);
        match inspect_bytes(&bytes) {
            Ok(info) => {
                oks += 1;
                if let Some(broken) = broken_invariant(&bytes, &info) {
                    panic!("round {round}: {broken}; input {bytes:02x?}");
                }
            }
            Err(e) => {
                errs += 1;
                let message = e.to_string();
                assert!(!message.contains('\n') && !message.is_empty(), "{message}");
            }
        }
    }
    // Both outcomes must be common, or the sweep tests nothing.
    assert!(oks > 300 && errs > 300, "ok {oks}, err {errs}");
}

/// The cargo-fuzz target's seed corpus (`fuzz/corpus/gguf_inspect`), mutated by a stable
/// mutation fuzzer: no input panics, and what is accepted has every tensor inside the file.
#[test]
fn the_fuzz_corpus_mutated_is_refused_or_sound() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/gguf_inspect");
    let mut seeds = tabagent_testhub::fuzz::corpus(&dir).unwrap();
    seeds.push(super::builder::valid_model().build());
    tabagent_testhub::fuzz::run(&seeds, 200_000, |input| {
        if let Ok(info) = tabagent_models::gguf::inspect_bytes(input) {
            for tensor in &info.tensors {
                let end = info.data_offset + tensor.offset + tensor.size_bytes;
                assert!(end <= info.file_size, "{} ends past the file", tensor.name);
            }
        }
    });
}
