//! The memory benchmarks (run by `scripts/bench-memory`, which prepares the data):
//!
//! - `ann VECTORS QUERIES TRUTH DIR`: builds the HNSW index through the memory (records with
//!   vectors, committed in batches of 1,000) and reports build time, then recall@10 and
//!   single-threaded queries/s (best of three passes) for each `ef` in `TABAGENT_BENCH_EF`
//!   (default 64): the index alone (`Memory::nearest`) and a full vector search that also
//!   reads the records.
//!   With `TABAGENT_BENCH_SERVE` set it instead runs one pass per stdin line (`index EF` or
//!   `records EF`), which `scripts/bench_memory.py interleave` alternates with hnswlib's.
//! - `hybrid TEXTS QUERY_TEXTS DIR`: keyword + vector hybrid search p50/p95 over the records
//!   `ann` wrote (texts attached by line number).
//! - `writes DIR`: durable inserts/s (one writer; 32 concurrent writers; batches of 1,000) and
//!   point reads/s (two threads, a million reads of random ids).
//!
//! Files are little-endian f32 (`n × 384`) and, for TRUTH, u32 ids (`queries × 10`). Each
//! result is one JSON line on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tabagent_memory::{
    Change, Embedding, HnswParams, Memory, MemoryConfig, Mode, NewRecord, SearchRequest, Store,
};

const DIM: usize = 384;
/// Timed passes over the queries per `ef`; the best is reported.
const PASSES: usize = 3;

fn floats(path: &str) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    all.chunks_exact(DIM).map(<[f32]>::to_vec).collect()
}

fn config(dir: &Path, ef: usize) -> MemoryConfig {
    MemoryConfig {
        hnsw: HnswParams {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: ef,
        },
        ..MemoryConfig::at(dir)
    }
}

fn embedding(vector: &[f32]) -> Embedding {
    Embedding {
        space: "minilm".into(),
        vector: vector.to_vec(),
    }
}

fn ann(vectors: &str, queries: &str, truth: &str, dir: &Path, texts: Option<&str>) {
    let vectors = floats(vectors);
    let queries = floats(queries);
    let truth: Vec<u32> = std::fs::read(truth)
        .unwrap()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let texts: Vec<String> = texts
        .map(|t| {
            std::fs::read_to_string(t)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(vectors.len());
    // TABAGENT_BENCH_REUSE=1 queries a DIR an earlier run built (its ids are 1..=n), for
    // profiling the searches alone.
    if std::env::var_os("TABAGENT_BENCH_REUSE").is_some() && dir.exists() {
        ids.extend(1..=vectors.len() as i64);
    } else {
        let memory = Memory::open(&config(dir, 64)).unwrap();
        for (chunk_no, chunk) in vectors.chunks(1000).enumerate() {
            let changes = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let n = chunk_no * 1000 + i;
                    Change::Insert {
                        store: Store::Embeddings,
                        record: NewRecord {
                            text: texts
                                .get(n)
                                .cloned()
                                .unwrap_or_else(|| format!("vector {n}")),
                            embedding: Some(embedding(v)),
                            ..Default::default()
                        },
                    }
                })
                .collect();
            for outcome in memory.apply(changes).unwrap() {
                if let tabagent_memory::Outcome::Inserted { record } = outcome {
                    ids.push(record.id);
                }
            }
        }
    }
    let build = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"test": "ann_build", "vectors": vectors.len(), "seconds": build})
    );
    let efs: Vec<usize> = std::env::var("TABAGENT_BENCH_EF")
        .unwrap_or_else(|_| "64".into())
        .split(',')
        .map(|e| e.trim().parse().unwrap())
        .collect();
    let bench = AnnBench {
        queries,
        truth,
        ids,
    };
    if std::env::var_os("TABAGENT_BENCH_SERVE").is_some() {
        return bench.serve(dir);
    }
    for ef in efs {
        let memory = Memory::open(&config(dir, ef)).unwrap();
        memory.nearest(&embedding(&bench.queries[0]), 10).unwrap();
        for full in [false, true] {
            // The best of PASSES passes, as the hnswlib side (scripts/bench_memory.py) does.
            let mut best = (0f64, 0f64);
            for _ in 0..PASSES {
                let (qps, recall) = bench.pass(&memory, full);
                best = (best.0.max(qps), recall);
            }
            AnnBench::report(ef, full, best);
        }
    }
}

/// The queries, their true neighbours, and the record id of each vector.
struct AnnBench {
    queries: Vec<Vec<f32>>,
    truth: Vec<u32>,
    ids: Vec<i64>,
}

impl AnnBench {
    /// One timed pass over the queries, one at a time: (queries/s, recall@10).
    fn pass(&self, memory: &Memory, full: bool) -> (f64, f64) {
        let started = Instant::now();
        let mut hits = 0usize;
        for (q, query) in self.queries.iter().enumerate() {
            let found: Vec<i64> = if full {
                let request = SearchRequest {
                    text: None,
                    vector: Some(embedding(query)),
                    filter: Default::default(),
                    mode: Mode::Vector,
                    limit: 10,
                    offset: 0,
                };
                memory
                    .search(&request)
                    .unwrap()
                    .hits
                    .into_iter()
                    .map(|h| h.record.id)
                    .collect()
            } else {
                memory
                    .nearest(&embedding(query), 10)
                    .unwrap()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect()
            };
            let expected = &self.truth[q * 10..q * 10 + 10];
            hits += expected
                .iter()
                .filter(|&&t| found.contains(&self.ids[t as usize]))
                .count();
        }
        let seconds = started.elapsed().as_secs_f64();
        (
            self.queries.len() as f64 / seconds,
            hits as f64 / (self.queries.len() * 10) as f64,
        )
    }

    fn report(ef: usize, full: bool, (qps, recall): (f64, f64)) {
        println!(
            "{}",
            serde_json::json!({
                "test": if full { "ann_search_with_records" } else { "ann_index" },
                "ef": ef,
                "recall_at_10": recall,
                "qps": qps,
            })
        );
    }

    /// Runs one pass per line read from stdin (`index EF` or `records EF`) and prints its
    /// result, so a driver can interleave these passes with its peer's: on a shared machine
    /// both then see the same disturbances.
    fn serve(&self, dir: &Path) {
        use std::io::{BufRead, Write};
        let mut open: std::collections::HashMap<usize, Memory> = Default::default();
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap();
            let Some((what, ef)) = line.split_once(' ') else {
                continue;
            };
            let ef: usize = ef.trim().parse().unwrap();
            let memory = open.entry(ef).or_insert_with(|| {
                let memory = Memory::open(&config(dir, ef)).unwrap();
                memory.nearest(&embedding(&self.queries[0]), 10).unwrap();
                memory
            });
            Self::report(ef, what == "records", self.pass(memory, what == "records"));
            std::io::stdout().flush().unwrap();
        }
    }
}

fn hybrid(query_texts: &str, queries: &str, dir: &Path) {
    let texts: Vec<String> = std::fs::read_to_string(query_texts)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let queries = floats(queries);
    let memory = Memory::open(&config(dir, 64)).unwrap();
    let mut times = Vec::new();
    for (text, vector) in texts.iter().zip(&queries) {
        let request = SearchRequest {
            text: Some(text.clone()),
            vector: Some(embedding(vector)),
            filter: Default::default(),
            mode: Mode::Hybrid,
            limit: 10,
            offset: 0,
        };
        let started = Instant::now();
        let found = memory.search(&request).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(!found.hits.is_empty());
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({"test": "hybrid", "queries": times.len(), "p50_ms": at(0.5), "p95_ms": at(0.95)})
    );
}

fn writes(dir: &Path) {
    let memory = Arc::new(Memory::open(&MemoryConfig::at(dir)).unwrap());
    let record = |n: usize| NewRecord {
        text: format!("a note about item {n} and what happened to it"),
        tags: vec!["bench".into()],
        ..Default::default()
    };
    let report = |test: &str, count: usize, seconds: f64| {
        println!(
            "{}",
            serde_json::json!({"test": test, "count": count, "per_second": count as f64 / seconds})
        );
    };
    let started = Instant::now();
    let n = 2000;
    for i in 0..n {
        memory.insert(Store::Knowledge, record(i)).unwrap();
    }
    report("insert_one_writer", n, started.elapsed().as_secs_f64());

    let writers = 32;
    let per = 500;
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let memory = Arc::clone(&memory);
            std::thread::spawn(move || {
                for i in 0..per {
                    memory
                        .insert(Store::Knowledge, record(w * per + i))
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    report(
        "insert_32_writers",
        writers * per,
        started.elapsed().as_secs_f64(),
    );

    let batches = 100;
    let started = Instant::now();
    let mut ids = Vec::new();
    for b in 0..batches {
        let changes = (0..1000)
            .map(|i| Change::Insert {
                store: Store::Knowledge,
                record: record(b * 1000 + i),
            })
            .collect();
        for outcome in memory.apply(changes).unwrap() {
            if let tabagent_memory::Outcome::Inserted { record } = outcome {
                ids.push(record.id);
            }
        }
    }
    report(
        "insert_batches_of_1000",
        batches * 1000,
        started.elapsed().as_secs_f64(),
    );

    let ids = Arc::new(ids);
    let reads = 1_000_000;
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let memory = Arc::clone(&memory);
            let ids = Arc::clone(&ids);
            std::thread::spawn(move || {
                let mut state = 0x9E37_79B9_u64 + t;
                for _ in 0..reads / 2 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let id = ids[(state % ids.len() as u64) as usize];
                    assert_eq!(memory.get(id).unwrap().id, id);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    report(
        "point_reads_2_threads",
        reads,
        started.elapsed().as_secs_f64(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("ann") => ann(
            &args[2],
            &args[3],
            &args[4],
            Path::new(&args[5]),
            args.get(6).map(String::as_str),
        ),
        Some("hybrid") => hybrid(&args[2], &args[3], Path::new(&args[4])),
        Some("writes") => writes(Path::new(&args[2])),
        _ => {
            eprintln!("usage: memory_bench ann VECTORS QUERIES TRUTH DIR [TEXTS] | hybrid QUERY_TEXTS QUERIES DIR | writes DIR");
            std::process::exit(2);
        }
    }
}
