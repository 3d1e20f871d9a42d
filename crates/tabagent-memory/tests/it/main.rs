//! Integration tests for tabagent-memory: a real SQLite file and real hnswlib indexes in a
//! temporary directory.

// Tests state their expectations with unwrap/expect/panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod graph;
mod maintenance;
mod records;
mod search;
mod text_index;
mod vectors;

use tabagent_memory::{Embedding, Memory, MemoryConfig, NewRecord};

/// A memory in a fresh temporary directory (kept alive by the returned guard).
pub fn fresh() -> (tempfile::TempDir, Memory) {
    let dir = tempfile::tempdir().expect("temp dir");
    let memory = Memory::open(&MemoryConfig::at(dir.path())).expect("open memory");
    (dir, memory)
}

/// A record with text and nothing else.
pub fn text(t: &str) -> NewRecord {
    NewRecord {
        text: t.to_string(),
        ..Default::default()
    }
}

/// A record with text and a vector in `space`.
pub fn with_vector(t: &str, space: &str, vector: Vec<f32>) -> NewRecord {
    NewRecord {
        text: t.to_string(),
        embedding: Some(Embedding {
            space: space.to_string(),
            vector,
        }),
        ..Default::default()
    }
}

/// A deterministic, well-spread 16-dimensional vector for `seed`.
pub fn spread(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..16)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}
