//! Every model on this machine, by id: files imported into tabagent's own store (plain names
//! such as `smollm2-135m-instruct`), GGUF files in the Hugging Face cache, whether
//! `tabagent pull` or `huggingface_hub` put them there (`owner/name:QUANT` or
//! `owner/name:FILE`), encoder snapshots there (`owner/name`: a `tokenizer.json` beside
//! safetensors or ONNX weights), encoder directories named in the configuration, and models the
//! Python ML worker runs (MediaPipe tasks, Whisper in CTranslate2 form, Transformers): in
//! `models.directories` or linked into `<data_dir>/worker-models` (`tabagent worker link`).
//!
//! A model's kind follows from its files, and its kind decides the engine that runs it
//! ([`ModelKind::backend`]): GGUF → llama.cpp in-process, encoders and ONNX → ONNX Runtime
//! in-process, the rest → the worker. Transports never choose: they ask the registry for a model
//! and get whichever engine its files call for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tabagent_hub::cache::CachedFile;
use tabagent_hub::repo::{ModelSpec, Selector};
use tabagent_hub::{HubCache, HubError};
use tabagent_models::store::{ModelEntry, ModelStore, StoreError};

/// What runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF language model, for llama.cpp.
    Gguf,
    /// A text encoder (embeddings), for ONNX Runtime: a directory.
    Encoder,
    /// Any other ONNX model, run on named tensors: an `.onnx` file.
    Onnx,
    /// MediaPipe tasks (`.task`, `.tflite`), for the worker's vision service.
    Vision,
    /// Whisper in CTranslate2 form (`model.bin`, `vocabulary.*`), for faster-whisper.
    Speech,
    /// A sentence-transformers model the worker runs with PyTorch.
    SentenceTransformers,
    /// A causal language model in safetensors, for Transformers' `generate` in the worker.
    TextGeneration,
}

/// What runs models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// llama.cpp, in this process.
    LlamaCpp,
    /// ONNX Runtime, in this process.
    OnnxRuntime,
    /// The supervised Python ML worker, over gRPC.
    Worker,
}

impl Backend {
    /// Its name in listings.
    pub fn name(self) -> &'static str {
        match self {
            Backend::LlamaCpp => "llama.cpp",
            Backend::OnnxRuntime => "onnxruntime",
            Backend::Worker => "python-worker",
        }
    }
}

impl ModelKind {
    /// Its name in listings.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Gguf | ModelKind::TextGeneration => "llm",
            ModelKind::Encoder | ModelKind::SentenceTransformers => "embedding",
            ModelKind::Onnx => "onnx",
            ModelKind::Vision => "vision",
            ModelKind::Speech => "speech",
        }
    }

    /// What runs this kind: the one dispatch rule.
    pub fn backend(self) -> Backend {
        match self {
            ModelKind::Gguf => Backend::LlamaCpp,
            ModelKind::Encoder | ModelKind::Onnx => Backend::OnnxRuntime,
            ModelKind::Vision
            | ModelKind::Speech
            | ModelKind::SentenceTransformers
            | ModelKind::TextGeneration => Backend::Worker,
        }
    }
}

/// One local model.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModel {
    /// What requests call it.
    pub id: String,
    /// What runs it.
    pub kind: ModelKind,
    /// The GGUF file, or an encoder's directory.
    pub path: PathBuf,
    /// Bytes.
    pub size_bytes: u64,
    /// Where it came from.
    pub source: Source,
    /// `general.architecture`, when the header says.
    pub architecture: Option<String>,
    /// Trained context length.
    pub context_length: Option<u64>,
    /// Whether the file carries a chat template.
    pub has_chat_template: bool,
    /// Unix seconds it arrived.
    pub created: u64,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `tabagent import`.
    Imported {
        /// Its sha256.
        sha256: String,
    },
    /// The Hugging Face cache.
    Hub {
        /// `owner/name`.
        repo: String,
        /// The snapshot's commit.
        commit: String,
        /// The file in the repository (an encoder's weights).
        file: String,
    },
    /// A directory named in `models.directories`, served where it is.
    Directory,
    /// A model directory `tabagent import` copied into the store (`<models>/directories/`).
    ImportedDirectory,
}

/// Why the catalog could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The import store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Hugging Face cache failed.
    #[error(transparent)]
    Hub(#[from] HubError),

    /// A configured directory cannot be removed by tabagent.
    #[error("`{0}` is served from a directory tabagent does not own (models.directories, or linked with `tabagent worker link`); remove it there instead")]
    NotOwned(String),
}

/// Every source of local models.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: ModelStore,
    hub: HubCache,
    directories: BTreeMap<String, PathBuf>,
    /// Models placed for the worker by name (`<data_dir>/worker-models/<id>`).
    worker_models: Option<PathBuf>,
}

impl Catalog {
    /// A catalog over the import store and the Hugging Face cache.
    pub fn new(store: ModelStore, hub: HubCache) -> Self {
        Self {
            store,
            hub,
            directories: BTreeMap::new(),
            worker_models: None,
        }
    }

    /// Adds the models linked for the worker under `dir` (one directory or link per model).
    pub fn with_worker_models(mut self, dir: PathBuf) -> Self {
        self.worker_models = Some(dir);
        self
    }

    /// Adds encoder directories served in place, by name.
    pub fn with_directories(mut self, directories: BTreeMap<String, PathBuf>) -> Self {
        self.directories = directories;
        self
    }

    /// The Hugging Face cache.
    pub fn hub(&self) -> &HubCache {
        &self.hub
    }

    /// Every local model, imported ones first.
    pub fn list(&self) -> Result<Vec<LocalModel>, CatalogError> {
        let mut models: Vec<LocalModel> = self
            .store
            .list()?
            .into_iter()
            .map(|entry| self.imported(&entry))
            .collect();
        let cached = self.hub.list(".gguf")?;
        models.extend(
            cached
                .iter()
                .filter(|f| is_current(f, &cached))
                .map(|f| hub_model(f, &cached)),
        );
        models.extend(self.imported_directories());
        models.extend(self.hub_encoders()?);
        models.extend(
            self.directories
                .iter()
                .filter_map(|(name, dir)| directory_model(name, dir)),
        );
        models.extend(self.linked_worker_models());
        Ok(models)
    }

    /// Where `tabagent import` keeps model directories.
    pub fn imported_directories_root(&self) -> PathBuf {
        self.store.root().join("directories")
    }

    /// An imported model directory, by name.
    fn imported_directory(&self, name: &str) -> Option<LocalModel> {
        tabagent_models::store::validate_name(name).ok()?;
        let mut model = directory_model(name, &self.imported_directories_root().join(name))?;
        model.source = Source::ImportedDirectory;
        Some(model)
    }

    /// The imported model directories, by name.
    fn imported_directories(&self) -> Vec<LocalModel> {
        let Ok(entries) = std::fs::read_dir(self.imported_directories_root()) else {
            return Vec::new();
        };
        let mut models: Vec<LocalModel> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && !self.directories.contains_key(name))
            .filter_map(|name| self.imported_directory(&name))
            .collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        models
    }

    /// The models linked for the worker, by name.
    fn linked_worker_models(&self) -> Vec<LocalModel> {
        let Some(root) = &self.worker_models else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut models: Vec<LocalModel> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                tabagent_models::store::validate_name(&name).ok()?;
                worker_model(&name, &root.join(&name), true)
            })
            .filter(|m| !self.directories.contains_key(&m.id))
            .collect();
        models.sort_by(|a, b| a.id.cmp(&b.id));
        models
    }

    /// Encoder snapshots in the Hugging Face cache: a current snapshot with a top-level
    /// `tokenizer.json` beside weights the ONNX engine runs.
    fn hub_encoders(&self) -> Result<Vec<LocalModel>, CatalogError> {
        let tokenizers = self.hub.list("tokenizer.json")?;
        Ok(tokenizers
            .iter()
            .filter(|f| f.path.as_str() == "tokenizer.json" && is_current(f, &tokenizers))
            .filter_map(|f| {
                let dir = f.local_path.parent()?;
                let mut model = encoder_model(f.repo.to_string(), dir)?;
                model.source = Source::Hub {
                    repo: f.repo.to_string(),
                    commit: f.commit.clone(),
                    file: weights_file(dir)?,
                };
                Some(model)
            })
            .collect())
    }

    /// The model `id` names: an imported name, or `owner/name[:QUANT|:FILE]` in the cache.
    pub fn resolve(&self, id: &str) -> Result<Option<LocalModel>, CatalogError> {
        if !id.contains('/') {
            if let Some(dir) = self.directories.get(id) {
                return Ok(directory_model(id, dir));
            }
            if let Some(imported) = self.list_imported(id)? {
                return Ok(Some(imported));
            }
            if let Some(imported) = self.imported_directory(id) {
                return Ok(Some(imported));
            }
            return Ok(match &self.worker_models {
                Some(root) if tabagent_models::store::validate_name(id).is_ok() => {
                    worker_model(id, &root.join(id), true)
                }
                _ => None,
            });
        }
        let Ok(spec) = ModelSpec::parse(id) else {
            return Ok(None);
        };
        if spec.selector == Selector::OnlyGguf {
            if let Some(encoder) = self
                .hub_encoders()?
                .into_iter()
                .find(|m| m.id == spec.repo.to_string())
            {
                return Ok(Some(encoder));
            }
        }
        let cached = self.hub.list(".gguf")?;
        let candidates: Vec<&CachedFile> = cached
            .iter()
            .filter(|f| f.repo == spec.repo && is_current(f, &cached))
            .collect();
        let names: Vec<String> = candidates.iter().map(|f| f.path.to_string()).collect();
        if candidates.is_empty() && spec.selector == Selector::OnlyGguf {
            return Ok(self.hub_worker_model(&spec.repo));
        }
        let Ok(chosen) = spec.choose(&names) else {
            return Ok(None);
        };
        Ok(candidates
            .iter()
            .find(|f| f.path.as_str() == chosen)
            .map(|f| hub_model(f, &cached)))
    }

    /// Deletes `model` from this machine.
    pub fn remove(&self, model: &LocalModel) -> Result<(), CatalogError> {
        match &model.source {
            Source::Imported { .. } => {
                self.store.remove(&model.id)?;
            }
            Source::Hub { repo, commit, file } if model.kind == ModelKind::Gguf => {
                let repo = tabagent_hub::RepoId::parse(repo)?;
                let file = tabagent_hub::RepoPath::parse(file)?;
                self.hub.remove(&repo, commit, &file)?;
            }
            Source::Hub { repo, commit, .. } => {
                // An encoder is its whole snapshot: weights, tokenizer and configuration.
                let repo_id = tabagent_hub::RepoId::parse(repo)?;
                for file in self.hub.list("")? {
                    if file.repo == repo_id && &file.commit == commit {
                        self.hub.remove(&repo_id, commit, &file.path)?;
                    }
                }
            }
            Source::Directory => return Err(CatalogError::NotOwned(model.id.clone())),
            Source::ImportedDirectory => {
                let dir = self.imported_directories_root().join(&model.id);
                std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io {
                    action: "remove",
                    path: dir,
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// A worker model in the Hugging Face cache: the snapshot `main` points at, when its files
    /// are a kind the worker runs.
    fn hub_worker_model(&self, repo: &tabagent_hub::RepoId) -> Option<LocalModel> {
        let commit = self
            .hub
            .resolve(repo, &tabagent_hub::Revision::main())
            .ok()??;
        let dir = self.hub.repo_dir(repo).join("snapshots").join(&commit);
        let mut model = worker_model(&repo.to_string(), &dir, false)?;
        model.source = Source::Hub {
            repo: repo.to_string(),
            commit,
            file: String::new(),
        };
        Some(model)
    }

    fn list_imported(&self, name: &str) -> Result<Option<LocalModel>, StoreError> {
        Ok(self.store.get(name)?.map(|entry| self.imported(&entry)))
    }

    fn imported(&self, entry: &ModelEntry) -> LocalModel {
        LocalModel {
            id: entry.name.clone(),
            kind: ModelKind::Gguf,
            path: self.store.path_of(entry),
            size_bytes: entry.size_bytes,
            source: Source::Imported {
                sha256: entry.sha256.clone(),
            },
            architecture: entry.architecture.clone(),
            context_length: entry.context_length,
            has_chat_template: entry.has_chat_template,
            created: entry.imported_at,
        }
    }
}

/// Of several snapshots holding the same file, the one `main` points at (else the newest
/// listed) stands for it.
fn is_current(file: &CachedFile, all: &[CachedFile]) -> bool {
    let same: Vec<&CachedFile> = all
        .iter()
        .filter(|f| f.repo == file.repo && f.path == file.path)
        .collect();
    if same.len() == 1 {
        return true;
    }
    match same.iter().find(|f| f.refs.iter().any(|r| r == "main")) {
        Some(main) => main.commit == file.commit,
        None => same.last().is_some_and(|last| last.commit == file.commit),
    }
}

fn hub_model(file: &CachedFile, all: &[CachedFile]) -> LocalModel {
    let siblings: Vec<String> = all
        .iter()
        .filter(|f| f.repo == file.repo && is_current(f, all))
        .map(|f| f.path.to_string())
        .collect();
    let info = tabagent_models::gguf::inspect_file(&file.local_path).ok();
    let created = std::fs::metadata(&file.local_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    LocalModel {
        id: hub_id(file, &siblings),
        kind: ModelKind::Gguf,
        path: file.local_path.clone(),
        size_bytes: file.size,
        source: Source::Hub {
            repo: file.repo.to_string(),
            commit: file.commit.clone(),
            file: file.path.to_string(),
        },
        architecture: info
            .as_ref()
            .and_then(|i| i.architecture().map(str::to_string)),
        context_length: info.as_ref().and_then(|i| i.context_length()),
        has_chat_template: info.as_ref().is_some_and(|i| i.chat_template().is_some()),
        created,
    }
}

/// The encoder weights in `dir`: safetensors (compiled) before an ONNX file.
fn weights_file(dir: &Path) -> Option<String> {
    ["model.safetensors", "model.onnx", "onnx/model.onnx"]
        .into_iter()
        .find(|f| dir.join(f).is_file())
        .map(str::to_string)
}

/// Files sentence-transformers and tokenizers read beside an encoder's weights.
const ENCODER_COMPANIONS: [&str; 9] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// In a repository listing without GGUF files, an encoder: its weights (safetensors before
/// ONNX) and the companion files present. `None` unless it has weights and a `tokenizer.json`.
pub fn encoder_files(files: &[String]) -> Option<(String, Vec<String>)> {
    if files
        .iter()
        .any(|f| f.to_ascii_lowercase().ends_with(".gguf"))
        || !files.iter().any(|f| f == "tokenizer.json")
    {
        return None;
    }
    let weights = ["model.safetensors", "model.onnx", "onnx/model.onnx"]
        .into_iter()
        .find(|w| files.iter().any(|f| f == w))?;
    let companions = ENCODER_COMPANIONS
        .into_iter()
        .filter(|c| files.iter().any(|f| f == c))
        .map(str::to_string)
        .collect();
    Some((weights.to_string(), companions))
}

/// When a file last changed, in Unix seconds (0 when the system cannot say).
fn modified_secs(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// An encoder in `dir` called `id`, if `dir` holds one.
fn encoder_model(id: String, dir: &Path) -> Option<LocalModel> {
    if !tabagent_onnx::EncoderModel::recognizes(dir) {
        return None;
    }
    let weights = dir.join(weights_file(dir)?);
    let metadata = std::fs::metadata(&weights).ok()?;
    let config: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let field = |key: &str| config.as_ref().and_then(|c| c.get(key).cloned());
    Some(LocalModel {
        id,
        kind: ModelKind::Encoder,
        path: dir.to_path_buf(),
        size_bytes: metadata.len(),
        source: Source::Directory,
        architecture: field("model_type").and_then(|v| v.as_str().map(str::to_string)),
        context_length: field("max_position_embeddings").and_then(|v| v.as_u64()),
        has_chat_template: false,
        created: modified_secs(&metadata),
    })
}

/// A configured path: an encoder directory, else an `.onnx` file (or a directory holding
/// `model.onnx`) run as a plain ONNX model.
/// What `path` would be served as under `name`, if it is a model directory.
pub fn probe_directory(name: &str, path: &Path) -> Option<LocalModel> {
    directory_model(name, path)
}

fn directory_model(name: &str, path: &Path) -> Option<LocalModel> {
    if let Some(model) = worker_model(name, path, false) {
        return Some(model);
    }
    if let Some(model) = encoder_model(name.to_string(), path) {
        return Some(model);
    }
    let file = if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() || file.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return None;
    }
    let metadata = std::fs::metadata(&file).ok()?;
    Some(LocalModel {
        id: name.to_string(),
        kind: ModelKind::Onnx,
        path: file,
        size_bytes: metadata.len(),
        source: Source::Directory,
        architecture: Some("onnx".to_string()),
        context_length: None,
        has_chat_template: false,
        created: modified_secs(&metadata),
    })
}

/// What the worker would run in `dir`, from its files: MediaPipe task files, Whisper in
/// CTranslate2 form, or a causal language model in safetensors. With `for_worker` (a model
/// linked for the worker) any other Transformers model is a sentence-transformers one; otherwise
/// an encoder is left to ONNX Runtime, which runs it in-process.
pub fn worker_kind(dir: &Path, for_worker: bool) -> Option<ModelKind> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let has = |name: &str| names.iter().any(|n| n == name);
    if names
        .iter()
        .any(|n| n.ends_with(".task") || n.ends_with(".tflite"))
    {
        return Some(ModelKind::Vision);
    }
    if has("model.bin") && (has("vocabulary.txt") || has("vocabulary.json")) {
        return Some(ModelKind::Speech);
    }
    let weights = names
        .iter()
        .any(|n| n.ends_with(".safetensors") || n == "pytorch_model.bin");
    if !weights || !has("config.json") {
        return None;
    }
    let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())?;
    let causal = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|archs| {
            archs
                .iter()
                .filter_map(|a| a.as_str())
                .any(|a| a.ends_with("ForCausalLM") || a.ends_with("LMHeadModel"))
        });
    if causal {
        return Some(ModelKind::TextGeneration);
    }
    (for_worker || has("modules.json") && !tabagent_onnx::EncoderModel::recognizes(dir))
        .then_some(ModelKind::SentenceTransformers)
}

/// A model the worker runs in `dir`, called `id` (see [`worker_kind`]).
fn worker_model(id: &str, dir: &Path, for_worker: bool) -> Option<LocalModel> {
    let kind = worker_kind(dir, for_worker)?;
    let metadata = std::fs::metadata(dir).ok()?;
    let size_bytes = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        // Followed links: a snapshot's files are links to its blobs.
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum();
    let config: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let field = |key: &str| config.as_ref().and_then(|c| c.get(key).cloned());
    Some(LocalModel {
        id: id.to_string(),
        kind,
        path: dir.to_path_buf(),
        size_bytes,
        source: Source::Directory,
        architecture: match kind {
            ModelKind::Vision => Some("mediapipe".to_string()),
            ModelKind::Speech => Some("whisper".to_string()),
            _ => field("model_type").and_then(|v| v.as_str().map(str::to_string)),
        },
        context_length: field("max_position_embeddings").and_then(|v| v.as_u64()),
        has_chat_template: kind == ModelKind::TextGeneration
            && (dir.join("chat_template.jinja").is_file()
                || std::fs::read_to_string(dir.join("tokenizer_config.json"))
                    .is_ok_and(|t| t.contains("chat_template"))),
        created: modified_secs(&metadata),
    })
}

/// `owner/name:QUANT` when the file name carries a quantization tag that picks it alone among
/// the repository's cached files, else `owner/name:FILE`.
fn hub_id(file: &CachedFile, siblings: &[String]) -> String {
    let name = file.path.file_name();
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    if let Some(quant) = stem
        .rsplit(['.', '-'])
        .next()
        .filter(|t| looks_like_quant(t))
    {
        let spec = ModelSpec {
            repo: file.repo.clone(),
            selector: Selector::Quant(quant.to_string()),
        };
        if spec
            .choose(siblings)
            .is_ok_and(|chosen| chosen == file.path.as_str())
        {
            return format!("{}:{}", file.repo, quant.to_ascii_uppercase());
        }
    }
    format!("{}:{}", file.repo, file.path)
}

fn looks_like_quant(token: &str) -> bool {
    let t = token.to_ascii_lowercase();
    let digits_after = |prefix: &str| {
        t.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    digits_after("q") || digits_after("iq") || matches!(t.as_str(), "f16" | "bf16" | "f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn a_models_files_decide_what_runs_it() {
        let vision = dir_with(&[("face_detector.tflite", ""), ("pose.task", "")]);
        assert_eq!(worker_kind(vision.path(), false), Some(ModelKind::Vision));
        let speech = dir_with(&[
            ("model.bin", ""),
            ("vocabulary.txt", ""),
            ("config.json", "{}"),
        ]);
        assert_eq!(worker_kind(speech.path(), false), Some(ModelKind::Speech));
        // A causal language model has what an encoder has (tokenizer, safetensors), and more.
        let causal = dir_with(&[
            ("config.json", r#"{"architectures": ["LlamaForCausalLM"]}"#),
            ("model.safetensors", ""),
            ("tokenizer.json", "{}"),
        ]);
        assert_eq!(
            worker_kind(causal.path(), false),
            Some(ModelKind::TextGeneration)
        );
        assert_eq!(
            directory_model("smol", causal.path()).map(|m| m.kind.backend()),
            Some(Backend::Worker)
        );
        // A BERT encoder stays in-process unless linked for the worker.
        let encoder = dir_with(&[
            ("config.json", r#"{"architectures": ["BertModel"]}"#),
            ("model.safetensors", ""),
            ("tokenizer.json", "{}"),
            ("modules.json", "[]"),
        ]);
        assert_eq!(worker_kind(encoder.path(), false), None);
        assert_eq!(
            worker_kind(encoder.path(), true),
            Some(ModelKind::SentenceTransformers)
        );
        // Nothing recognisable: nothing runs it.
        let empty = dir_with(&[("notes.txt", "")]);
        assert_eq!(worker_kind(empty.path(), true), None);
        assert_eq!(worker_kind(&empty.path().join("missing"), true), None);
    }

    #[test]
    fn quantization_tags_are_recognised() {
        for tag in ["Q4_K_M", "q8_0", "IQ2_XS", "F16", "bf16", "Q4_1"] {
            assert!(looks_like_quant(tag), "{tag}");
        }
        for tag in ["Instruct", "v2", "gguf", "q", "Qwen2"] {
            assert!(!looks_like_quant(tag), "{tag}");
        }
    }
}
