//! A load generator for OpenAI-compatible chat endpoints (the proxy benchmark's client): a fixed
//! number of requests from a fixed number of concurrent connections, each answer checked.
//!
//! `tabagent-load --url URL --model M [--concurrency C] [--requests N] [--warmup W] [--stream]`
//! prints one JSON line: requests, errors, seconds, requests per second, and the latency
//! percentiles in milliseconds.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Sends chat requests and reports latency and throughput")]
struct Args {
    /// The chat completions URL.
    #[arg(long)]
    url: String,
    /// The model to ask for.
    #[arg(long)]
    model: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests measured.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Requests sent first and not measured.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Ask for a streamed answer.
    #[arg(long)]
    stream: bool,
    /// A bearer key, if the endpoint needs one.
    #[arg(long)]
    key: Option<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8,
        "stream": args.stream,
    });
    let send = |client: reqwest::Client,
                body: serde_json::Value,
                url: String,
                key: Option<String>| async move {
        let started = Instant::now();
        let mut request = client.post(&url).json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let ok = match request.send().await {
            Ok(response) if response.status().is_success() => response
                .text()
                .await
                .is_ok_and(|text| text.contains("Hello")),
            _ => false,
        };
        (ok, started.elapsed())
    };
    for _ in 0..args.warmup {
        send(
            client.clone(),
            body.clone(),
            args.url.clone(),
            args.key.clone(),
        )
        .await;
    }
    let per_worker = args.requests.div_ceil(args.concurrency.max(1));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, body, url, key) = (
            client.clone(),
            body.clone(),
            args.url.clone(),
            args.key.clone(),
        );
        workers.spawn(async move {
            let mut results = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                results.push(send(client.clone(), body.clone(), url.clone(), key.clone()).await);
            }
            results
        });
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    while let Some(done) = workers.join_next().await {
        for (ok, latency) in done.unwrap_or_default() {
            if ok {
                latencies.push(latency);
            } else {
                errors += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let total = latencies.len() + errors;
    println!(
        "{}",
        serde_json::json!({
            "requests": total, "errors": errors, "seconds": seconds,
            "rps": latencies.len() as f64 / seconds,
            "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99),
        })
    );
}

fn fail(message: &str) -> ! {
    eprintln!("tabagent-load: {message}");
    std::process::exit(1)
}
