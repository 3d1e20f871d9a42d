//! The worker's environment: a venv with the pinned packages of `python/requirements.txt`, and
//! the worker's sources with their generated protocol code. Both are made once and reused: the
//! venv is kept while the requirements are unchanged (a stamp holds their digest), and the
//! sources live in a directory named by the digest of everything in it, so a new tabagent never
//! runs an old worker.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::WorkerError;

/// The worker's sources, built into the binary (paths relative to the package's parent).
const SOURCES: &[(&str, &str)] = &[
    (
        "tabagent_worker/__init__.py",
        include_str!("../../../python/tabagent_worker/__init__.py"),
    ),
    (
        "tabagent_worker/__main__.py",
        include_str!("../../../python/tabagent_worker/__main__.py"),
    ),
    (
        "tabagent_worker/errors.py",
        include_str!("../../../python/tabagent_worker/errors.py"),
    ),
    (
        "tabagent_worker/files.py",
        include_str!("../../../python/tabagent_worker/files.py"),
    ),
    (
        "tabagent_worker/lane.py",
        include_str!("../../../python/tabagent_worker/lane.py"),
    ),
    (
        "tabagent_worker/models.py",
        include_str!("../../../python/tabagent_worker/models.py"),
    ),
    (
        "tabagent_worker/protocol.py",
        include_str!("../../../python/tabagent_worker/protocol.py"),
    ),
    (
        "tabagent_worker/server.py",
        include_str!("../../../python/tabagent_worker/server.py"),
    ),
    (
        "tabagent_worker/speech.py",
        include_str!("../../../python/tabagent_worker/speech.py"),
    ),
    (
        "tabagent_worker/transformers_models.py",
        include_str!("../../../python/tabagent_worker/transformers_models.py"),
    ),
    (
        "tabagent_worker/vision.py",
        include_str!("../../../python/tabagent_worker/vision.py"),
    ),
];
const PROTO: &str = include_str!("../../../proto/ml_worker.proto");
const REQUIREMENTS: &str = include_str!("../../../python/requirements.txt");
/// PyTorch, Transformers and sentence-transformers: about 2.5 GB, so installed only when asked.
const TRANSFORMERS_REQUIREMENTS: &str =
    include_str!("../../../python/requirements-transformers.txt");

/// Where and with what the environment is made.
#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    /// The directory holding the venv and the sources (`<cache>/worker`).
    pub dir: PathBuf,
    /// The Python that makes the venv (3.10 or newer).
    pub python: PathBuf,
    /// Also install Transformers (`python/requirements-transformers.txt`).
    pub transformers: bool,
}

/// A ready environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The venv's Python.
    pub python: PathBuf,
    /// The directory holding the `tabagent_worker` package (the worker's working directory).
    pub sources: PathBuf,
}

impl Environment {
    /// Makes what is missing or out of date, then returns the environment. Runs pip, so the
    /// first call takes minutes; later ones only check.
    pub async fn prepare(config: &EnvironmentConfig) -> Result<Environment, WorkerError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| env_error(&config.dir, e))?;
        // One preparer at a time (two pips in one venv break it); the lock goes with the file.
        let lock_path = config.dir.join(".lock");
        let _lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File, WorkerError> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| env_error(&lock_path, e))?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| env_error(&lock_path, e.into()))?;
            Ok(file)
        })
        .await
        .map_err(|e| WorkerError::Environment(e.to_string()))??;
        let python = ensure_venv(config).await?;
        if config.transformers {
            ensure_transformers(config, &python).await?;
        }
        let sources = ensure_sources(&config.dir, &python).await?;
        Ok(Environment { python, sources })
    }

    /// The environment as it stands, if it was prepared for these sources and requirements.
    pub fn existing(config: &EnvironmentConfig) -> Option<Environment> {
        let venv = config.dir.join("venv");
        let python = venv.join("bin/python");
        let sources = config.dir.join(format!("src-{}", sources_digest()));
        (stamped(&venv, STAMP, REQUIREMENTS) && sources.join(READY).exists())
            .then_some(Environment { python, sources })
    }
}

const STAMP: &str = ".tabagent-requirements";
const TRANSFORMERS_STAMP: &str = ".tabagent-transformers";
const READY: &str = ".tabagent-ready";

fn digest_of(requirements: &str) -> String {
    hex::encode(Sha256::digest(requirements.as_bytes()))
}

fn sources_digest() -> String {
    let mut digest = Sha256::new();
    for (path, text) in SOURCES {
        digest.update(path.as_bytes());
        digest.update([0]);
        digest.update(text.as_bytes());
        digest.update([0]);
    }
    digest.update(PROTO.as_bytes());
    hex::encode(&digest.finalize()[..8])
}

fn env_error(path: &Path, err: std::io::Error) -> WorkerError {
    WorkerError::Environment(format!("{}: {err}", path.display()))
}

async fn run(command: &mut Command, what: &str) -> Result<(), WorkerError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| WorkerError::Environment(format!("{what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(WorkerError::Environment(format!(
        "{what} failed ({}): {}",
        output.status,
        last.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )))
}

async fn ensure_venv(config: &EnvironmentConfig) -> Result<PathBuf, WorkerError> {
    let venv = config.dir.join("venv");
    let python = venv.join("bin/python");
    if stamped(&venv, STAMP, REQUIREMENTS) {
        return Ok(python);
    }
    if !python.exists() {
        tracing::info!(venv = %venv.display(), "making the ML worker's venv");
        run(
            Command::new(&config.python)
                .arg("-m")
                .arg("venv")
                .arg(&venv),
            "python -m venv",
        )
        .await?;
    }
    tracing::info!("installing the ML worker's packages (MediaPipe, faster-whisper, gRPC; minutes the first time)");
    pip_install(
        config,
        &python,
        "requirements.txt",
        REQUIREMENTS,
        STAMP,
        &[],
    )
    .await?;
    Ok(python)
}

/// Installs the Transformers extra over the venv, unless this version of it is there. Every
/// package of it is pinned, so pip is told not to resolve (torch names CUDA libraries a CPU
/// machine does not need).
async fn ensure_transformers(config: &EnvironmentConfig, python: &Path) -> Result<(), WorkerError> {
    if stamped(
        &config.dir.join("venv"),
        TRANSFORMERS_STAMP,
        TRANSFORMERS_REQUIREMENTS,
    ) {
        return Ok(());
    }
    tracing::info!("installing Transformers into the ML worker's venv (PyTorch: about 2.5 GB, minutes the first time)");
    pip_install(
        config,
        python,
        "requirements-transformers.txt",
        TRANSFORMERS_REQUIREMENTS,
        TRANSFORMERS_STAMP,
        &["--no-deps"],
    )
    .await
}

/// Whether the venv's `stamp` holds the digest of `requirements` (they are installed).
fn stamped(venv: &Path, stamp: &str, requirements: &str) -> bool {
    std::fs::read_to_string(venv.join(stamp)).is_ok_and(|s| s.trim() == digest_of(requirements))
}

/// `pip install [extra] -r` the `requirements` (written to `file` beside the venv), then stamps
/// the venv with their digest.
async fn pip_install(
    config: &EnvironmentConfig,
    python: &Path,
    file: &str,
    requirements: &str,
    stamp: &str,
    extra: &[&str],
) -> Result<(), WorkerError> {
    let path = config.dir.join(file);
    std::fs::write(&path, requirements).map_err(|e| env_error(&path, e))?;
    run(
        Command::new(python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(extra)
            .arg("-r")
            .arg(&path),
        &format!("pip install -r {file}"),
    )
    .await?;
    let stamp = config.dir.join("venv").join(stamp);
    std::fs::write(&stamp, digest_of(requirements)).map_err(|e| env_error(&stamp, e))
}

async fn ensure_sources(dir: &Path, python: &Path) -> Result<PathBuf, WorkerError> {
    let sources = dir.join(format!("src-{}", sources_digest()));
    if sources.join(READY).exists() {
        return Ok(sources);
    }
    // Written beside, then renamed: a half-written tree is never taken for a ready one.
    let staging = tempfile::Builder::new()
        .prefix(".src-")
        .tempdir_in(dir)
        .map_err(|e| env_error(dir, e))?;
    for (path, text) in SOURCES {
        let target = staging.path().join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| env_error(parent, e))?;
        }
        std::fs::write(&target, text).map_err(|e| env_error(&target, e))?;
    }
    let proto_dir = staging.path().join("proto");
    std::fs::create_dir_all(&proto_dir).map_err(|e| env_error(&proto_dir, e))?;
    std::fs::write(proto_dir.join("ml_worker.proto"), PROTO)
        .map_err(|e| env_error(&proto_dir, e))?;
    let generated = staging.path().join("tabagent_worker/_generated");
    std::fs::create_dir_all(&generated).map_err(|e| env_error(&generated, e))?;
    run(
        Command::new(python)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(&proto_dir)
            .arg(format!("--python_out={}", generated.display()))
            .arg(format!("--grpc_python_out={}", generated.display()))
            .arg(proto_dir.join("ml_worker.proto")),
        "generating the worker's protocol code",
    )
    .await?;
    std::fs::write(staging.path().join(READY), b"").map_err(|e| env_error(dir, e))?;
    let staged = staging.keep();
    match std::fs::rename(&staged, &sources) {
        Ok(()) => Ok(sources),
        // Another process finished first: its tree is the same.
        Err(_) if sources.join(READY).exists() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(sources)
        }
        Err(e) => Err(env_error(&sources, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_python_file_of_the_package_is_built_in() {
        let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../python/tabagent_worker");
        let mut on_disk: Vec<String> = std::fs::read_dir(&package)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".py"))
            .map(|name| format!("tabagent_worker/{name}"))
            .collect();
        on_disk.sort();
        let built_in: Vec<String> = SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(built_in, on_disk, "add new worker modules to SOURCES");
    }
}
