//! gRPC round trip between tabagent and the Python worker: `Models.List` (no model work) one
//! call at a time, p50 and p99, from this Rust client and, side by side in the same run, from
//! Python's own grpcio client on the same socket (the peer). Run by `scripts/bench-worker`;
//! `TABAGENT_BENCH_WORKER_DIR` is a prepared environment (`tabagent worker setup`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tabagent_worker::{EnvironmentConfig, ModelDir, ModelRoots, Supervisor, SupervisorConfig};

struct NoModels;

impl ModelRoots for NoModels {
    fn locate(&self, _model_id: &str) -> Option<ModelDir> {
        None
    }
}

const PYTHON_PEER: &str = r#"
import sys, time
sys.path.insert(0, sys.argv[2])
import grpc
from tabagent_worker.protocol import pb, rpc
calls = int(sys.argv[3])
channel = grpc.insecure_channel("unix://" + sys.argv[1], options=[("grpc.default_authority", "localhost")])
stub = rpc.ModelsStub(channel)
for _ in range(200):
    stub.List(pb.ListRequest())
took = []
for _ in range(calls):
    start = time.perf_counter()
    stub.List(pb.ListRequest())
    took.append(time.perf_counter() - start)
took.sort()
print(f"{took[len(took) // 2] * 1e3:.3f} {took[int(len(took) * 0.99)] * 1e3:.3f}")
"#;

/// p50 and p99 in milliseconds.
type Percentiles = (f64, f64);
/// One round: tabagent's client, then Python's.
type Round = (Percentiles, Percentiles);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = PathBuf::from(std::env::var_os("TABAGENT_BENCH_WORKER_DIR").expect(
        "TABAGENT_BENCH_WORKER_DIR: a prepared worker environment (run scripts/bench-worker)",
    ));
    let calls: usize = std::env::var("TABAGENT_BENCH_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    let environment = EnvironmentConfig {
        dir,
        python: PathBuf::from("python3"),
        transformers: false,
    };
    let ready = tabagent_worker::Environment::existing(&environment)
        .expect("the worker environment is not prepared");
    let supervisor =
        Supervisor::start(SupervisorConfig::new(environment), Arc::new(NoModels)).unwrap();
    let worker = supervisor.worker();
    for _ in 0..200 {
        worker.models().await.unwrap();
    }
    let mut rounds: Vec<Round> = Vec::new();
    for round in 0..3 {
        let mut took = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = Instant::now();
            worker.models().await.unwrap();
            took.push(start.elapsed().as_secs_f64() * 1e3);
        }
        took.sort_by(f64::total_cmp);
        let rust = (percentile(&took, 0.5), percentile(&took, 0.99));
        let peer = std::process::Command::new(&ready.python)
            .arg("-c")
            .arg(PYTHON_PEER)
            .arg(supervisor.socket())
            .arg(&ready.sources)
            .arg(calls.to_string())
            .output()
            .unwrap();
        assert!(
            peer.status.success(),
            "{}",
            String::from_utf8_lossy(&peer.stderr)
        );
        let text = String::from_utf8_lossy(&peer.stdout);
        let mut numbers = text.split_whitespace().map(|n| n.parse::<f64>().unwrap());
        let python = (numbers.next().unwrap(), numbers.next().unwrap());
        println!(
            "round {round}: Rust client p50 {:.3} ms p99 {:.3} ms | Python client p50 {:.3} ms p99 {:.3} ms",
            rust.0, rust.1, python.0, python.1
        );
        rounds.push((rust, python));
    }
    let best = |pick: fn(&Round) -> f64| rounds.iter().map(pick).fold(f64::INFINITY, f64::min);
    let (rust50, rust99) = (best(|r| r.0 .0), best(|r| r.0 .1));
    let (py50, py99) = (best(|r| r.1 .0), best(|r| r.1 .1));
    println!(
        "best of 3: Rust→Python gRPC round trip p50 {rust50:.3} ms, p99 {rust99:.3} ms; \
         Python→Python p50 {py50:.3} ms, p99 {py99:.3} ms; ratio (Python / Rust) p50 {:.2}×, p99 {:.2}×",
        py50 / rust50,
        py99 / rust99
    );
    supervisor.shutdown().await;
}
