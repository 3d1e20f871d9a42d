//! GGUF validation: valid files, one hostile file per rule, truncation and mutation sweeps, the
//! real SmolLM2 file, and the fuzzer's seed corpus.

mod alloc_probe;
mod builder;
mod corpus;
mod hostile_metadata;
mod hostile_model;
mod hostile_tensors;
mod real_model;
mod sweep;
mod valid;
