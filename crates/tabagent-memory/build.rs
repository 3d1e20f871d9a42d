//! Compiles hnswlib (vendored, header-only C++) with tabagent's C wrapper around it.

fn main() {
    println!("cargo:rerun-if-changed=cpp/hnsw.cpp");
    println!("cargo:rerun-if-changed=vendor/hnswlib");
    cc::Build::new()
        .cpp(true)
        .std("c++14")
        .file("cpp/hnsw.cpp")
        .include("vendor")
        .opt_level(3)
        // The vendored headers are kept byte for byte: their warnings are not ours to fix.
        .warnings(false)
        .compile("tabagent_hnsw");
}
