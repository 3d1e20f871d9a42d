//! Shared setup: the model file, a hub serving it, a client on a fresh cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tabagent_hub::{HubCache, HubClient, HubConfig, ProgressEvent};
use tabagent_testhub::{Repo, TestHub};

pub const REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF";
pub const GATED: &str = "gated-org/SmolLM2-gated";
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const TOKEN: &str = "hf_test_token";

/// The real model file the tests serve.
pub fn model_file() -> PathBuf {
    let path = std::env::var_os("TABAGENT_TEST_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .expect(
            "TABAGENT_TEST_SMOLLM2_GGUF must name the SmolLM2 GGUF file (scripts/test fetches it)",
        );
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

pub fn sha256_of(path: &Path) -> String {
    tabagent_hub::download::sha256_file(path).unwrap()
}

/// A hub with the model in a public and a gated repository, plus a small README.
pub async fn hub() -> TestHub {
    let model = model_file();
    let readme = std::env::temp_dir().join("tabagent-hub-test-README.md");
    std::fs::write(&readme, "# SmolLM2 GGUF\n").unwrap();
    let public = Repo::new(REPO)
        .file(FILE, &model)
        .unwrap()
        .file("README.md", &readme)
        .unwrap();
    let gated = Repo::new(GATED).file(FILE, &model).unwrap().gated();
    TestHub::start(vec![public, gated], Some(TOKEN.to_string()))
        .await
        .unwrap()
}

/// Client settings for `hub`: small chunks so that even this file takes several ranges.
pub fn config(hub: &TestHub) -> HubConfig {
    HubConfig {
        endpoint: hub.endpoint().parse().unwrap(),
        token: None,
        token_withheld: false,
        offline: false,
        connections: 4,
        chunk_size: 8 << 20,
        retries: 5,
        timeout: Duration::from_secs(5),
    }
}

pub fn client(config: HubConfig, cache: &Path) -> HubClient {
    HubClient::new(config, HubCache::new(cache)).unwrap()
}

/// Collects progress events.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<ProgressEvent>>>);

impl Recorder {
    pub fn events(&self) -> Vec<ProgressEvent> {
        self.0.lock().unwrap().clone()
    }

    pub fn sink(&self) -> impl Fn(ProgressEvent) + Send + Sync + 'static {
        let events = Arc::clone(&self.0);
        move |event| events.lock().unwrap().push(event)
    }

    pub fn resumed(&self) -> Option<u64> {
        self.events().iter().find_map(|e| match e {
            ProgressEvent::Started { resumed, .. } => Some(*resumed),
            _ => None,
        })
    }
}

/// Files under `dir`, relative, sorted (to show what a failure left behind).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
