//! The local model store: imported GGUF files and their manifest.
//!
//! Files live content-addressed under `blobs/sha256-<hex>`; `manifest.json` maps names to them.
//! Names never become paths, so no request can steer a path out of the store. The manifest is
//! replaced atomically (write, fsync, rename, fsync the directory) under an exclusive lock, so a
//! crash mid-import leaves either the old manifest or the new one, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::gguf::{self, GgufError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A model name is not acceptable.
    #[error("invalid model name {0:?}: use 1-128 letters, digits, '.', '_', '-' or ':', not starting with '.' or '-'")]
    InvalidName(String),
    /// The file is not a valid GGUF model.
    #[error("{path} is not a valid GGUF model: {source}")]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: GgufError,
    },
    /// The file's digest is not the expected one.
    #[error("sha256 mismatch for {path}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The digest asked for.
        expected: String,
        /// The digest found.
        actual: String,
    },
    /// The manifest cannot be read.
    #[error("the model manifest {path} is corrupt: {reason}")]
    CorruptManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One model in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The name requests use.
    pub name: String,
    /// The blob's file name inside the store.
    pub blob: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Bytes.
    pub size_bytes: u64,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// Whether the file carries a chat template.
    pub has_chat_template: bool,
    /// Trained context length.
    pub context_length: Option<u64>,
    /// Where it was imported from.
    pub source: String,
    /// Unix seconds of the import.
    pub imported_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    models: Vec<ModelEntry>,
}

/// A model store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let blobs = root.join("blobs");
        fs::create_dir_all(&blobs).map_err(|source| io("create", &blobs, source))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>, StoreError> {
        let mut models = self.read_manifest()?.models;
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    /// The model called `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<ModelEntry>, StoreError> {
        Ok(self
            .read_manifest()?
            .models
            .into_iter()
            .find(|m| m.name == name))
    }

    /// The path of an entry's file.
    pub fn path_of(&self, entry: &ModelEntry) -> PathBuf {
        self.root.join("blobs").join(&entry.blob)
    }

    /// Validates and copies the GGUF file at `source` into the store as `name` (default: derived
    /// from the file name), replacing any model of that name. With `expected_sha256`, a file with
    /// another digest is refused and nothing changes.
    pub fn import_gguf(
        &self,
        source: &Path,
        name: Option<&str>,
        expected_sha256: Option<&str>,
    ) -> Result<ModelEntry, StoreError> {
        let name = match name {
            Some(name) => name.to_string(),
            None => default_name(source),
        };
        validate_name(&name)?;
        let info = gguf::inspect_file(source).map_err(|err| StoreError::InvalidModel {
            path: source.to_path_buf(),
            source: err,
        })?;
        let partial = self
            .root
            .join("blobs")
            .join(format!(".import-{}.partial", std::process::id()));
        let (sha256, size_bytes) = copy_hashing(source, &partial)?;
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&sha256) {
                let _ = fs::remove_file(&partial);
                return Err(StoreError::ChecksumMismatch {
                    path: source.to_path_buf(),
                    expected: expected.to_string(),
                    actual: sha256,
                });
            }
        }
        let blob = format!("sha256-{sha256}");
        let blob_path = self.root.join("blobs").join(&blob);
        fs::rename(&partial, &blob_path).map_err(|err| io("move into place", &blob_path, err))?;
        sync_dir(&self.root.join("blobs"))?;
        let entry = ModelEntry {
            name: name.clone(),
            blob,
            sha256,
            size_bytes,
            architecture: info.architecture().map(str::to_string),
            has_chat_template: info.chat_template().is_some(),
            context_length: info.context_length(),
            source: source.display().to_string(),
            imported_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let _lock = self.lock()?;
        let mut manifest = self.read_manifest()?;
        manifest.models.retain(|m| m.name != name);
        manifest.models.push(entry.clone());
        self.write_manifest(&manifest)?;
        Ok(entry)
    }

    /// Removes the model `name`, and its file once no other name uses it. Returns whether it
    /// existed. The manifest changes first, so a crash leaves at worst an orphaned blob.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut manifest = self.read_manifest()?;
        let Some(index) = manifest.models.iter().position(|m| m.name == name) else {
            return Ok(false);
        };
        let removed = manifest.models.remove(index);
        self.write_manifest(&manifest)?;
        if !manifest.models.iter().any(|m| m.blob == removed.blob) {
            let blob = self.path_of(&removed);
            fs::remove_file(&blob).or_else(|err| match err.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(io("remove", &blob, err)),
            })?;
        }
        Ok(true)
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    fn read_manifest(&self) -> Result<Manifest, StoreError> {
        let path = self.manifest_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|err| StoreError::CorruptManifest {
                    path,
                    reason: err.to_string(),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
                version: 1,
                models: Vec::new(),
            }),
            Err(err) => Err(io("read", &path, err)),
        }
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let path = self.manifest_path();
        let tmp = self.root.join(".manifest.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(manifest).map_err(|err| StoreError::CorruptManifest {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        let mut file = File::create(&tmp).map_err(|err| io("create", &tmp, err))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|err| io("write", &tmp, err))?;
        fs::rename(&tmp, &path).map_err(|err| io("replace", &path, err))?;
        sync_dir(&self.root)
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| io("open", &path, err))?;
        file.lock().map_err(|err| io("lock", &path, err))?;
        Ok(file)
    }
}

/// Checks a model name is safe to show, store and type.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

fn default_name(source: &Path) -> String {
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let cleaned: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned
        .trim_start_matches(['.', '-'])
        .chars()
        .take(128)
        .collect()
}

fn copy_hashing(source: &Path, dest: &Path) -> Result<(String, u64), StoreError> {
    let mut input = File::open(source).map_err(|err| io("open", source, err))?;
    let mut output = File::create(dest).map_err(|err| io("create", dest, err))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .map_err(|err| io("read", source, err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output
            .write_all(&buffer[..n])
            .map_err(|err| io("write", dest, err))?;
        total += n as u64;
    }
    output.sync_all().map_err(|err| io("sync", dest, err))?;
    Ok((hex::encode(hasher.finalize()), total))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|err| io("sync", dir, err))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
