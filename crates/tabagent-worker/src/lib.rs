//! tabagent's Python ML worker, for what only Python has: MediaPipe vision, faster-whisper
//! speech and Hugging Face Transformers (`python/tabagent_worker`, `proto/ml_worker.proto`).
//!
//! - [`Environment`]: the worker's venv and sources, made or reused (the sources are built into
//!   this crate, so the binary needs no checkout).
//! - [`ModelFiles`]: the files of models, by id, that the worker asks for (it never downloads or
//!   reads the model store itself); a path never leaves its model's directory.
//! - [`Supervisor`]: runs the worker on a Unix socket in a private directory, in its own process
//!   group, waits for gRPC health to say SERVING, forwards its log lines into `tracing`,
//!   restarts it with backoff when it dies and stops it with SIGTERM, then SIGKILL.
//! - [`Worker`]: the client: each call waits for a running worker and is tried once more if the
//!   worker died under it (every call is idempotent: the worker keeps no state). Single vision
//!   frames take the worker's vision lane (a plain Unix socket, see `lane`), everything else gRPC.

mod client;
mod environment;
mod error;
mod files;
mod supervisor;
mod vision_socket;

/// The generated protobuf messages, services and clients.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("tabagent.worker.v1");
}

pub use client::Worker;
pub use environment::{Environment, EnvironmentConfig};
pub use error::WorkerError;
pub use files::{ModelDir, ModelFiles, ModelRoots};
pub use supervisor::{Supervisor, SupervisorConfig};
