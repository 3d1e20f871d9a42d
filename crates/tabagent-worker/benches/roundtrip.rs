//! Round trips between tabagent and the Python worker, one call at a time, p50 and p99:
//! - gRPC `Models.List` (no model work) from this Rust client and, side by side in the same run,
//!   from Python's own grpcio client on the same socket (the peer);
//! - a vision request the worker refuses at once (no model id), over gRPC `Vision.Analyze` and
//!   over the vision lane that single frames take: the hop's own cost each way.
//!
//! Run by `scripts/bench-worker`; `TABAGENT_BENCH_WORKER_DIR` is a prepared environment
//! (`tabagent worker setup`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tabagent_worker::{
    pb, EnvironmentConfig, ModelDir, ModelRoots, Supervisor, SupervisorConfig, WorkerError,
};

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
/// One round: tabagent's gRPC client, Python's, then a refused frame over gRPC and the lane.
type Round = [Percentiles; 4];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// `calls` calls one after another: p50 and p99.
async fn measure<F, Fut>(calls: usize, call: F) -> Percentiles
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        call().await;
        took.push(start.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    (percentile(&took, 0.5), percentile(&took, 0.99))
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
    let vision = tonic::transport::Endpoint::from_shared(format!(
        "unix://{}",
        supervisor.socket().display()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let vision = pb::vision_client::VisionClient::new(vision);
    // No model id: refused before any model work, so only the hop is measured.
    let refused = pb::VisionRequest::default();
    let over_grpc = || {
        let mut vision = vision.clone();
        let request = refused.clone();
        async move {
            let status = vision.analyze(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        }
    };
    let over_lane = || {
        let worker = worker.clone();
        let request = refused.clone();
        async move {
            let error = worker.analyze(request).await.unwrap_err();
            assert!(matches!(error, WorkerError::InvalidInput(_)), "{error:?}");
        }
    };
    for _ in 0..200 {
        over_grpc().await;
        over_lane().await;
    }
    let mut rounds: Vec<Round> = Vec::new();
    for round in 0..3 {
        let rust = measure(calls, || async {
            worker.models().await.unwrap();
        })
        .await;
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
        let grpc = measure(calls, over_grpc).await;
        let lane = measure(calls, over_lane).await;
        println!(
            "round {round}: Models.List: Rust client p50 {:.3} ms p99 {:.3} ms | Python client \
             p50 {:.3} ms p99 {:.3} ms; refused frame: gRPC p50 {:.3} ms p99 {:.3} ms | vision \
             lane p50 {:.3} ms p99 {:.3} ms",
            rust.0, rust.1, python.0, python.1, grpc.0, grpc.1, lane.0, lane.1
        );
        rounds.push([rust, python, grpc, lane]);
    }
    // Each column's best p50 and best p99 over the rounds.
    let best = |column: usize| {
        let p50 = rounds
            .iter()
            .map(|r| r[column].0)
            .fold(f64::INFINITY, f64::min);
        let p99 = rounds
            .iter()
            .map(|r| r[column].1)
            .fold(f64::INFINITY, f64::min);
        (p50, p99)
    };
    let ((rust50, rust99), (py50, py99)) = (best(0), best(1));
    let ((grpc50, grpc99), (lane50, lane99)) = (best(2), best(3));
    println!(
        "best of 3: Rust→Python gRPC round trip p50 {rust50:.3} ms, p99 {rust99:.3} ms; \
         Python→Python p50 {py50:.3} ms, p99 {py99:.3} ms; ratio (Python / Rust) p50 {:.2}×, p99 {:.2}×",
        py50 / rust50,
        py99 / rust99
    );
    println!(
        "best of 3: a refused frame over gRPC p50 {grpc50:.3} ms, p99 {grpc99:.3} ms; over the \
         vision lane p50 {lane50:.3} ms, p99 {lane99:.3} ms; ratio (gRPC / lane) p50 {:.1}×, p99 {:.1}×",
        grpc50 / lane50,
        grpc99 / lane99
    );
    supervisor.shutdown().await;
}
