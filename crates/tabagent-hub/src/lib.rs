//! Models from the Hugging Face Hub, kept in the standard Hugging Face cache.
//!
//! - [`repo`]: repository ids, file paths and revisions, validated before they touch a URL or
//!   a path.
//! - [`cache`]: the cache layout `models--{owner}--{name}/{blobs,snapshots,refs}` that
//!   `huggingface_hub` uses, so files fetched by either tool serve the other.
//! - [`client`]: the Hub's file-resolution protocol (`HEAD /{repo}/resolve/{rev}/{file}`,
//!   `X-Repo-Commit`, `X-Linked-Etag`, redirects to a CDN) and the repository API.
//! - [`download`]: parallel byte ranges into a partial file that survives interruption, then
//!   sha256 verification and an atomic rename into `blobs/`.

pub mod cache;
pub mod client;
pub mod download;
mod error;
pub mod repo;

pub use cache::HubCache;
pub use client::{Downloaded, FileMetadata, HubClient, HubConfig, RepoInfo};
pub use download::{Progress, ProgressEvent};
pub use error::HubError;
pub use repo::{ModelSpec, RepoId, RepoPath, Revision};
