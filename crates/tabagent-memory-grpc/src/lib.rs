//! tabagent's memory over gRPC (`proto/database.proto`): [`MemoryService`] serves any
//! [`MemoryApi`](tabagent_memory::MemoryApi) with tonic, and [`RemoteMemory`] is a client that
//! is itself a `MemoryApi`, so a memory on another machine is used like the embedded one.

mod client;
mod convert;
mod server;

/// The generated protobuf messages, service and client.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("tabagent.memory.v1");
}

pub use client::RemoteMemory;
pub use server::{serve, MemoryService, TlsIdentity};
