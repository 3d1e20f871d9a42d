//! Sandbox start-to-result latency for a trivial snippet (goal: p50 < 50 ms), beside the same
//! snippet run directly, without a sandbox, in the same run: what the sandbox adds.
//!
//! `cargo bench -p tabagent-agent --bench sandbox [-- RUNS]` (default 200 runs of each, after
//! 10 warm-up runs; the two alternate so that drift hits both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tabagent_agent::{Language, Outcome, Sandbox, SandboxConfig};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let sandbox = Sandbox::new(SandboxConfig::default())
        .await
        .expect("bubblewrap runs here");
    for (language, code, direct) in [
        (
            Language::Python,
            "print(1)",
            ["/usr/bin/python3", "-I", "-B", "-c"],
        ),
        (Language::Shell, "echo 1", ["/bin/sh", "-c", "", ""]),
    ] {
        let direct: Vec<&str> = direct.into_iter().filter(|a| !a.is_empty()).collect();
        let (mut boxed, mut bare) = (Vec::new(), Vec::new());
        for i in 0..runs + 10 {
            let started = Instant::now();
            let run = sandbox.run(language, code).await.unwrap();
            let took = started.elapsed();
            assert_eq!(
                (run.outcome, run.stdout.as_str()),
                (Outcome::Exited(0), "1\n")
            );
            let started = Instant::now();
            let out = tokio::process::Command::new(direct[0])
                .args(&direct[1..])
                .arg(code)
                .output()
                .await
                .unwrap();
            let took_bare = started.elapsed();
            assert_eq!(out.stdout, b"1\n");
            if i >= 10 {
                boxed.push(took);
                bare.push(took_bare);
            }
        }
        boxed.sort();
        bare.sort();
        println!(
            "{language:?}: sandboxed p50 {:.1} ms p99 {:.1} ms; direct p50 {:.1} ms p99 {:.1} ms; \
             sandboxed / direct p50 {:.2}x ({runs} runs each)",
            percentile(&boxed, 0.5),
            percentile(&boxed, 0.99),
            percentile(&bare, 0.5),
            percentile(&bare, 0.99),
            percentile(&boxed, 0.5) / percentile(&bare, 0.5),
        );
    }
}
