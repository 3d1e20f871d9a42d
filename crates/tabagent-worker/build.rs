//! Compiles `proto/ml_worker.proto` with protox (a protobuf compiler in Rust: no `protoc` to
//! install) and generates the worker's client and tabagent's ModelFiles service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout (a shared target
    // directory) must still find this checkout's proto.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("ml_worker.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Frames, audio and file chunks as `bytes::Bytes`: an upload's buffer travels to the
        // socket without a copy, and a call retried after a crash clones a pointer.
        .bytes(".tabagent.worker.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
