//! `tabagent bench ENCODER`: an encoder's batch-1 latency and batched throughput in process,
//! the in-process column of `scripts/bench-embed`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use tabagent_onnx::{EncoderModel, GraphSource, OnnxRuntime};

use crate::catalog::LocalModel;
use crate::cli::BenchArgs;
use crate::config::Config;

/// Sentences used when no `--texts` file is given.
const DEFAULT_TEXTS: [&str; 8] = [
    "The cat sits on the mat.",
    "How do I reset my password if I no longer have access to my email?",
    "Quantum entanglement links the states of two particles regardless of distance.",
    "A man is playing a guitar on stage in front of a large crowd.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The defendant pleaded not guilty to all charges.",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "Die Katze schläft auf dem Sofa.",
];

/// Loads the encoder as `serve` would and times single inputs and batches of `--batch`.
pub async fn run(config: Config, args: BenchArgs, entry: LocalModel) -> anyhow::Result<()> {
    if args.batch == 0 || args.reps == 0 {
        bail!("--batch and --reps must be at least 1");
    }
    let texts: Vec<String> = match &args.texts {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        None => DEFAULT_TEXTS.iter().map(|s| (*s).to_string()).collect(),
    };
    if texts.is_empty() {
        bail!("no texts to embed");
    }
    let runtime_config = config.onnx_runtime();
    let settings = config.encoder_settings();
    let dir = entry.path.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        let runtime = OnnxRuntime::get(&runtime_config)?;
        EncoderModel::load(&runtime, &dir, settings)
    })
    .await??;
    if let (Some(out), GraphSource::Safetensors(weights)) =
        (&args.save_onnx, &encoder.info().source)
    {
        save_graph(&entry.path, weights, encoder.info().precision, out)?;
    }
    tokio::task::spawn_blocking(move || measure(&encoder, &texts, &args)).await?
}

/// Writes the ONNX graph compiled from the safetensors, for other runtimes to run the same graph.
fn save_graph(
    dir: &Path,
    weights: &Path,
    precision: tabagent_onnx::Precision,
    out: &Path,
) -> anyhow::Result<()> {
    let config = tabagent_onnx::bert::BertConfig::read(&dir.join("config.json"))?;
    let bytes = tabagent_onnx::bert::compile(&config, weights, precision)?;
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn measure(encoder: &EncoderModel, texts: &[String], args: &BenchArgs) -> anyhow::Result<()> {
    let encode = |chunk: &[String]| -> anyhow::Result<()> {
        let inputs = chunk
            .iter()
            .map(|t| encoder.tokenizer().encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        encoder.encode_blocking(inputs)?;
        Ok(())
    };
    let batch: Vec<String> = texts.iter().cycle().take(args.batch).cloned().collect();
    // Warm-up: one batch and one single input.
    encode(&batch)?;
    encode(&batch[..1])?;
    let mut latencies = Vec::new();
    let mut throughputs = Vec::new();
    for _ in 0..args.reps {
        for text in texts.iter().take(32) {
            let started = Instant::now();
            encode(std::slice::from_ref(text))?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let started = Instant::now();
        encode(&batch)?;
        throughputs.push(batch.len() as f64 / started.elapsed().as_secs_f64());
    }
    let latency = super::bench::median(&mut latencies);
    let throughput = super::bench::median(&mut throughputs);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "reps": args.reps, "batch": args.batch,
                "latency_ms_p50": latency, "inputs_per_s": throughput,
            })
        );
    } else {
        println!(
            "model {} · median of {} runs after a warm-up",
            args.model, args.reps
        );
        println!("batch 1          {latency:>8.2} ms");
        println!("batch {:<4}       {throughput:>8.1} inputs/s", args.batch);
    }
    Ok(())
}
