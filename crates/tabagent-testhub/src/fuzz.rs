//! A mutation fuzzer a stable toolchain runs as an ordinary test: each round takes an input
//! of a seed corpus (files kept in the repository), applies a few random edits — bits flipped,
//! bytes set to boundary values, runs deleted, duplicated or spliced from another seed, lengths
//! rewritten — and hands the result to the parser under test, which must not panic, hang or
//! allocate without bound, and whose verdict the test checks. It is not coverage-guided (that
//! is `fuzz/`'s cargo-fuzz target, which needs a nightly compiler); it explores around real
//! inputs, deterministically (the same seed gives the same rounds), so a failure is repeatable
//! from the round number it prints.

use std::path::Path;

/// A small, fast, deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values parsers trip on: zero, one, the edges of each integer width.
const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7F,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// One input changed by one to eight edits, splicing from `others` now and then.
fn mutate(input: &[u8], others: &[Vec<u8>], random: &mut Random) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + random.below(8) {
        let at = random.below(out.len().max(1));
        match random.below(8) {
            0 if !out.is_empty() => out[at] ^= 1 << random.below(8),
            1 if !out.is_empty() => out[at] = random.next() as u8,
            2 => {
                // An integer of 1, 2, 4 or 8 bytes, little- or big-endian, at a random place.
                let width = 1 << random.below(4);
                let value = INTERESTING[random.below(INTERESTING.len())];
                let bytes = match random.below(2) {
                    0 => value.to_le_bytes(),
                    _ => value.to_be_bytes(),
                };
                let end = (at + width).min(out.len());
                let taken = end - at;
                out[at..end].copy_from_slice(&bytes[..taken]);
            }
            3 if !out.is_empty() => {
                let len = 1 + random.below((out.len() - at).min(64));
                out.drain(at..at + len);
            }
            4 if !out.is_empty() => {
                let len = 1 + random.below((out.len() - at).min(64));
                let run: Vec<u8> = out[at..at + len].to_vec();
                for _ in 0..1 + random.below(4) {
                    out.splice(at..at, run.iter().copied());
                }
            }
            5 if !others.is_empty() => {
                let other = &others[random.below(others.len())];
                if !other.is_empty() {
                    let from = random.below(other.len());
                    let len = 1 + random.below((other.len() - from).min(256));
                    out.splice(at..at, other[from..from + len].iter().copied());
                }
            }
            6 => out.truncate(at),
            _ => out.insert(at.min(out.len()), random.next() as u8),
        }
    }
    out
}

/// The files in `dir`, each a seed (in name order); an error when there are none.
pub fn corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let seeds = paths
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<Vec<_>>>()?;
    if seeds.is_empty() {
        return Err(std::io::Error::other(format!(
            "the corpus {} is empty",
            dir.display()
        )));
    }
    Ok(seeds)
}

/// Hands each seed, then `rounds` mutations of them, to `target`. A panic names the round and
/// the input's first bytes, so it can be replayed.
pub fn run(seeds: &[Vec<u8>], rounds: usize, mut target: impl FnMut(&[u8])) {
    for seed in seeds {
        target(seed);
    }
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    for round in 0..rounds {
        let input = mutate(&seeds[round % seeds.len()], seeds, &mut random);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if let Err(panic) = outcome {
            let shown: Vec<u8> = input.iter().copied().take(64).collect();
            eprintln!(
                "fuzz round {round} failed on {} bytes starting {shown:?}",
                input.len()
            );
            std::panic::resume_unwind(panic);
        }
    }
}
