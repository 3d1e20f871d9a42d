//! `tabagent bench MODEL`: prompt and decode speed of the bare engine, the baseline that
//! `scripts/bench-llm` holds the HTTP path to. Encoders go to [`super::bench_embed`].

use std::time::{Duration, Instant};

use anyhow::bail;
use tabagent_core::{GenerationEvent, GenerationParams};
use tabagent_llama::{GenerationHandle, LlamaEngine};

use crate::cli::BenchArgs;
use crate::config::Config;

const FILLER: &str =
    "The history of mechanical clocks begins in medieval Europe, where monasteries \
    needed a reliable way to mark the hours of prayer. Early tower clocks used a verge and foliot \
    escapement driven by falling weights; they had no dials and simply struck a bell. ";

/// Loads the model as `serve` would and measures prompt processing and decoding of one sequence.
pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let entry = config.catalog()?.resolve(&args.model)?.ok_or_else(|| {
        anyhow::anyhow!(
            "the model `{}` does not exist; `tabagent models` lists local models",
            args.model
        )
    })?;
    if entry.kind == crate::catalog::ModelKind::Encoder {
        return super::bench_embed::run(config, args, entry).await;
    }
    if args.prompt_tokens < 8
        || args.decode_prompt_tokens < 8
        || args.gen_tokens < 2
        || args.reps == 0
    {
        bail!("--prompt-tokens and --decode-prompt-tokens must be at least 8, --gen-tokens at least 2 and --reps at least 1");
    }
    let min_ctx = args.prompt_tokens.max(args.decode_prompt_tokens) + args.gen_tokens + 64;
    // Shaped as `serve` would run it (slots, context), so the HTTP path is held to the same engine.
    let engine = super::load_local(&config, &args.model, min_ctx, None).await?;
    let threads = engine.config().threads;

    tokio::task::spawn_blocking(move || measure(&engine, &args, threads)).await?
}

fn measure(engine: &LlamaEngine, args: &BenchArgs, threads: u32) -> anyhow::Result<()> {
    let mut prompt_rates = Vec::new();
    let mut decode_rates = Vec::new();
    let mut prompt_tokens = 0;
    // Rep 0 warms up. Each rep's prompt starts differently so no slot cache is reused.
    for rep in 0..=args.reps {
        let prompt = prompt_of(engine, rep, args.prompt_tokens);
        let mut params = GenerationParams {
            max_tokens: Some(1),
            ..GenerationParams::default()
        };
        params.sampling.temperature = 0.0;
        let handle = engine.complete(&prompt, params.clone())?;
        prompt_tokens = handle.prompt_tokens;
        let first = first_text(handle)?.0;
        let prompt_rate = f64::from(prompt_tokens) / first.as_secs_f64();

        params.max_tokens = Some(args.gen_tokens);
        params.ignore_eos = true;
        let decode_prompt = prompt_of(engine, rep + 1000, args.decode_prompt_tokens);
        let handle = engine.complete(&decode_prompt, params)?;
        let (first, rest, generated) = first_text(handle)?;
        let decode_rate = f64::from(generated.saturating_sub(1)) / (rest - first).as_secs_f64();
        if rep > 0 {
            prompt_rates.push(prompt_rate);
            decode_rates.push(decode_rate);
        }
    }
    let prompt = median(&mut prompt_rates);
    let decode = median(&mut decode_rates);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "threads": threads, "reps": args.reps,
                "prompt_tokens": prompt_tokens, "gen_tokens": args.gen_tokens,
                "prompt_tokens_per_s": prompt, "decode_tokens_per_s": decode,
            })
        );
    } else {
        println!(
            "model {} · {threads} threads · median of {} runs after a warm-up",
            args.model, args.reps
        );
        println!("prompt  {prompt_tokens:>5} tokens  {prompt:>8.1} tok/s");
        println!("decode  {:>5} tokens  {decode:>8.1} tok/s", args.gen_tokens);
    }
    Ok(())
}

/// A prompt of at most `tokens` tokens whose first words depend on `rep`.
fn prompt_of(engine: &LlamaEngine, rep: u32, tokens: u32) -> String {
    let mut text = format!("Run {rep}. ");
    while engine.count_tokens(&text) < tokens as usize {
        text.push_str(FILLER);
    }
    while engine.count_tokens(&text) > tokens as usize {
        let cut = text.trim_end().rfind(' ').unwrap_or(0);
        text.truncate(cut);
    }
    text
}

/// Waits for a generation to end: the time to its first text, to its end, and its token count.
fn first_text(mut handle: GenerationHandle) -> anyhow::Result<(Duration, Duration, u32)> {
    let started = Instant::now();
    let mut first = None;
    while let Some(event) = handle.events.blocking_recv() {
        match event {
            GenerationEvent::Text(_)
            | GenerationEvent::ToolCall(_)
            | GenerationEvent::Logprobs(_)
            | GenerationEvent::Refusal(_) => {
                first.get_or_insert_with(|| started.elapsed());
            }
            GenerationEvent::Finished { usage, .. } => {
                let end = started.elapsed();
                return Ok((first.unwrap_or(end), end, usage.completion_tokens));
            }
            GenerationEvent::Failed(err) => return Err(err.into()),
        }
    }
    bail!("the engine dropped a generation without finishing it")
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
