//! Loaded models by id, within a memory budget.
//!
//! A request for a model that is not loaded loads it (concurrent requests share one load).
//! Before a load, the registry reserves the model's estimated memory (weights + KV cache for the
//! configured context + compute buffers, from the GGUF header); when the budget would be
//! exceeded it unloads the least recently used idle models first. A model with a request in
//! flight is never unloaded. Idle models go after their keep-alive (the configured one, or
//! the one the last request or load asked for, as Ollama's `keep_alive`), counted from the end
//! of their last request; the default model stays unless a request says otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tabagent_llama::{EngineConfig, LlamaEngine, LoadError};
use tabagent_onnx::{
    EncoderModel, EncoderSettings, ModelError, OnnxModel, OnnxRuntime, RuntimeConfig,
};
use tokio::sync::OnceCell;

use crate::catalog::{Catalog, CatalogError, LocalModel, ModelKind};
use crate::keep_alive::KeepAlive;

/// Why a model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No model of that name on this machine.
    #[error("the model `{0}` does not exist; `tabagent models` lists local models, `tabagent pull OWNER/REPO:QUANT` and `tabagent import FILE` add one")]
    NotFound(String),
    /// The local models could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The model's file is invalid or llama.cpp refused it.
    #[error("the model `{name}` cannot be loaded: {source}")]
    Load {
        /// The model.
        name: String,
        /// Why.
        source: LoadError,
    },
    /// The encoder's files are invalid, or ONNX Runtime refused them or is missing.
    #[error("the model `{name}` cannot be loaded: {source}")]
    LoadEncoder {
        /// The model.
        name: String,
        /// Why.
        source: ModelError,
    },
    /// The model cannot serve this kind of request.
    #[error("the model `{name}` is {is}; {wanted}")]
    WrongKind {
        /// The model.
        name: String,
        /// What it is.
        is: &'static str,
        /// What the request needs.
        wanted: &'static str,
    },
    /// The model does not fit next to the models that are busy.
    #[error("the model `{name}` needs about {needed_mib} MiB but only {free_mib} MiB of the {budget_mib} MiB model budget can be freed (in use: {busy}); retry later or raise models.memory_budget_mib")]
    OverBudget {
        /// The model.
        name: String,
        /// Its estimate.
        needed_mib: u64,
        /// What could be had.
        free_mib: u64,
        /// The budget.
        budget_mib: u64,
        /// Models holding the rest.
        busy: String,
    },
    /// The model is serving requests.
    #[error("the model `{0}` is serving requests; it cannot be unloaded now")]
    Busy(String),
    /// llama.cpp cannot open the model's file (it crashed or refused in a probe process).
    #[error("the model `{name}` cannot be used: {reason}")]
    Unusable {
        /// The model.
        name: String,
        /// What llama.cpp did, in one line.
        reason: String,
    },
    /// The loading task died.
    #[error("loading the model `{0}` was interrupted")]
    Interrupted(String),
    /// The model runs in the ML worker, which is not running in this server.
    #[error("the model `{0}` runs in the Python ML worker, which this server does not run: run `tabagent worker setup`, or set worker.mode = \"on\"")]
    NoWorker(String),
    /// The ML worker could not load the model.
    #[error("the model `{name}` cannot be loaded by the ML worker: {source}")]
    Worker {
        /// The model.
        name: String,
        /// Why.
        source: tabagent_worker::WorkerError,
    },
}

/// A loaded model's engine.
#[derive(Clone)]
pub enum Engine {
    /// A language model on llama.cpp.
    Llama(Arc<LlamaEngine>),
    /// A text encoder on ONNX Runtime.
    Encoder(Arc<EncoderModel>),
    /// Any ONNX model on ONNX Runtime.
    Onnx(Arc<OnnxModel>),
    /// A model the Python ML worker holds.
    Worker(Arc<WorkerModel>),
}

/// A model loaded in the ML worker. The worker holds it; this handle stands for it here (for
/// keep-alive, the budget and unloading), and unloads it from the worker when dropped.
pub struct WorkerModel {
    /// The model's id, which the worker uses to ask for its files.
    pub id: String,
    /// What it is.
    pub kind: ModelKind,
    /// The worker.
    pub worker: tabagent_worker::Worker,
}

impl WorkerModel {
    /// The worker's name for this kind.
    pub fn worker_kind(kind: ModelKind) -> Option<tabagent_worker::pb::ModelKind> {
        use tabagent_worker::pb::ModelKind as K;
        Some(match kind {
            ModelKind::Vision => K::Mediapipe,
            ModelKind::Speech => K::Whisper,
            ModelKind::SentenceTransformers => K::SentenceTransformers,
            ModelKind::TextGeneration => K::TextGeneration,
            ModelKind::Gguf | ModelKind::Encoder | ModelKind::Onnx => return None,
        })
    }
}

impl Drop for WorkerModel {
    fn drop(&mut self) {
        // Unloading is a call to the worker; a dropped handle has no caller to wait for it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (worker, id) = (self.worker.clone(), std::mem::take(&mut self.id));
            runtime.spawn(async move {
                if let Err(err) = worker.unload(&id).await {
                    tracing::debug!(model = %id, error = %err, "the ML worker did not unload the model");
                }
            });
        }
    }
}

impl Engine {
    /// The language model, or why this is not one.
    pub fn llama(self, name: &str) -> Result<Arc<LlamaEngine>, RegistryError> {
        match self {
            Engine::Llama(engine) => Ok(engine),
            other => Err(RegistryError::WrongKind {
                name: name.to_string(),
                is: other.kind(),
                wanted: "this endpoint needs a language model (GGUF)",
            }),
        }
    }

    /// The worker model of `kind`, or why this is not one.
    pub fn worker(
        self,
        name: &str,
        kind: ModelKind,
        wanted: &'static str,
    ) -> Result<Arc<WorkerModel>, RegistryError> {
        match self {
            Engine::Worker(model) if model.kind == kind => Ok(model),
            other => Err(RegistryError::WrongKind {
                name: name.to_string(),
                is: other.kind(),
                wanted,
            }),
        }
    }

    /// The plain ONNX model, or why this is not one.
    pub fn onnx(self, name: &str) -> Result<Arc<OnnxModel>, RegistryError> {
        match self {
            Engine::Onnx(model) => Ok(model),
            other => Err(RegistryError::WrongKind {
                name: name.to_string(),
                is: other.kind(),
                wanted: "/v1/onnx runs plain ONNX models (an .onnx file in models.directories)",
            }),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Engine::Llama(_) => "a language model",
            Engine::Encoder(_) => "an embedding model (use /v1/embeddings)",
            Engine::Onnx(_) => "a plain ONNX model (use /v1/onnx/run)",
            Engine::Worker(model) => match model.kind {
                ModelKind::Vision => "a MediaPipe vision model (use /v1/vision/{task})",
                ModelKind::Speech => "a speech model (use /v1/audio/transcriptions)",
                ModelKind::SentenceTransformers => {
                    "a sentence-transformers model (use /v1/embeddings)"
                }
                _ => "a Transformers language model",
            },
        }
    }

    /// The encoder, or why this is not one.
    pub fn encoder(self, name: &str) -> Result<Arc<EncoderModel>, RegistryError> {
        match self {
            Engine::Encoder(encoder) => Ok(encoder),
            other => Err(RegistryError::WrongKind {
                name: name.to_string(),
                is: other.kind(),
                wanted: "this endpoint needs an embedding model (`tabagent pull --recommended --role embedding` fetches one)",
            }),
        }
    }

    /// Loaded and nobody is using it: nothing running or queued, and no handler holding it.
    fn is_idle(&self) -> bool {
        match self {
            Engine::Llama(engine) => {
                let stats = engine.stats();
                stats.active == 0 && stats.queued == 0 && Arc::strong_count(engine) == 1
            }
            Engine::Encoder(encoder) => Arc::strong_count(encoder) == 1,
            Engine::Onnx(model) => Arc::strong_count(model) == 1,
            Engine::Worker(model) => Arc::strong_count(model) == 1,
        }
    }
}

/// A model's load, shared by every request that needs it while it happens.
type LoadCell = Arc<OnceCell<Engine>>;

/// How a registry manages memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// Bytes all loaded models may hold together.
    pub budget_bytes: u64,
    /// Idle time after which a model is unloaded, unless a request asks for another.
    pub keep_alive: KeepAlive,
    /// A model kept loaded for good unless a request asks otherwise (the default model).
    pub pinned: Option<String>,
}

/// What the registry knows of one model it has been asked for.
struct Slot {
    cell: LoadCell,
    /// Bytes reserved for it.
    estimate: u64,
    /// When a request last used it; while one runs, the reaper keeps moving this forward, so
    /// the keep-alive counts from the end of the last request.
    last_used: Instant,
    keep_alive: KeepAlive,
}

/// A model's state, for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    /// Not in memory.
    OnDisk,
    /// Being loaded.
    Loading,
    /// Serving; bytes reserved.
    Loaded(u64),
}

/// How encoders are loaded: ONNX Runtime's setup and the batching settings.
#[derive(Debug, Clone, Default)]
pub struct EncoderLoading {
    /// Where ONNX Runtime is and which providers it may use.
    pub runtime: RuntimeConfig,
    /// Sessions and batch limits.
    pub settings: EncoderSettings,
}

/// Models loaded in this process.
pub struct ModelRegistry {
    catalog: Catalog,
    engine_config: EngineConfig,
    encoders: EncoderLoading,
    lifecycle: Lifecycle,
    /// Where the verdicts of model probes are kept (`crate::probe`); `None`: no probe.
    probes: Option<std::path::PathBuf>,
    /// The ML worker, for the models it runs (set once it is started).
    worker: std::sync::OnceLock<tabagent_worker::Worker>,
    models: Mutex<HashMap<String, Slot>>,
    /// Serialises admission decisions (which model to unload for which), not loads themselves.
    admission: tokio::sync::Mutex<()>,
    /// Wakes the reaper when a keep-alive changes.
    keep_alive_changed: tokio::sync::Notify,
}

/// A model in hand: its canonical id and its engine.
pub struct Acquired {
    /// The model's id (a request may have named it by another spelling).
    pub id: String,
    /// Its engine; while held, the model counts as in use and is not unloaded.
    pub engine: Engine,
}

impl ModelRegistry {
    /// A registry over `catalog` that loads models with `engine_config` under `lifecycle`.
    pub fn new(catalog: Catalog, engine_config: EngineConfig, lifecycle: Lifecycle) -> Self {
        Self {
            catalog,
            engine_config,
            encoders: EncoderLoading::default(),
            lifecycle,
            probes: None,
            worker: std::sync::OnceLock::new(),
            models: Mutex::new(HashMap::new()),
            admission: tokio::sync::Mutex::new(()),
            keep_alive_changed: tokio::sync::Notify::new(),
        }
    }

    /// Opens each GGUF file in a probe process before this one (`crate::probe`), keeping the
    /// verdicts under `data_dir`.
    pub fn with_probes(mut self, data_dir: &std::path::Path) -> Self {
        self.probes = Some(data_dir.to_path_buf());
        self
    }

    /// Loads encoders with `encoders` (ONNX Runtime's location, providers and batching).
    pub fn with_encoders(mut self, encoders: EncoderLoading) -> Self {
        self.encoders = encoders;
        self
    }

    /// Serves the worker's kinds of models with `worker` (once: the worker starts after the
    /// registry exists, since the router's local provider holds the registry).
    pub fn set_worker(&self, worker: tabagent_worker::Worker) {
        let _ = self.worker.set(worker);
    }

    /// How encoders are loaded.
    pub fn encoder_loading(&self) -> &EncoderLoading {
        &self.encoders
    }

    /// The local models behind it.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The engine for `name`, loading it if needed. Concurrent callers share one load.
    pub async fn get(&self, name: &str) -> Result<Engine, RegistryError> {
        Ok(self.acquire(name, None).await?.engine)
    }

    /// Like [`ModelRegistry::get`], also setting the model's keep-alive when `keep_alive` is
    /// given (it then holds for this model until another request changes it).
    pub async fn acquire(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Acquired, RegistryError> {
        if let Some(engine) = self.touch(name, keep_alive) {
            return Ok(Acquired {
                id: name.to_string(),
                engine,
            });
        }
        // Only ids of local models get a slot: a client cannot grow the map with made-up names.
        // Slots are keyed by the canonical id, so two spellings of one model load it once.
        let entry = self.entry(name).await?;
        if let Some(engine) = self.touch(&entry.id, keep_alive) {
            return Ok(Acquired {
                id: entry.id,
                engine,
            });
        }
        let cell = self.admit(&entry, keep_alive).await?;
        let id = entry.id.as_str();
        let loaded = cell.get_or_try_init(|| self.load(&entry)).await;
        match loaded {
            Ok(engine) => Ok(Acquired {
                id: entry.id.clone(),
                engine: engine.clone(),
            }),
            Err(err) => {
                // Give back the reservation of a load that failed (unless another caller's
                // attempt has since succeeded).
                let mut models = self.lock();
                if models.get(id).is_some_and(|slot| !slot.cell.initialized()) {
                    models.remove(id);
                }
                Err(err)
            }
        }
    }

    async fn load(&self, entry: &LocalModel) -> Result<Engine, RegistryError> {
        let id = entry.id.as_str();
        let path = entry.path.clone();
        tracing::info!(model = id, path = %path.display(), kind = entry.kind.name(), backend = entry.kind.backend().name(), "loading model");
        let interrupted = |_| RegistryError::Interrupted(id.to_string());
        match entry.kind {
            ModelKind::Gguf => {
                if let Some(data_dir) = &self.probes {
                    crate::probe::vet_or_refuse(data_dir, &path, id, self.engine_config.gpu_layers)
                        .await?;
                }
                let config = self.engine_config.clone();
                let engine = tokio::task::spawn_blocking(move || LlamaEngine::load(&path, config))
                    .await
                    .map_err(interrupted)?
                    .map_err(|source| RegistryError::Load {
                        name: id.to_string(),
                        source,
                    })?;
                tracing::info!(model = id, facts = ?engine.facts(), "model loaded");
                Ok(Engine::Llama(Arc::new(engine)))
            }
            ModelKind::Encoder => {
                let settings = self.encoders.settings;
                let encoder = self
                    .load_onnx(id, move |runtime| {
                        EncoderModel::load(runtime, &path, settings)
                    })
                    .await?;
                tracing::info!(model = id, info = ?encoder.info(), "model loaded");
                Ok(Engine::Encoder(Arc::new(encoder)))
            }
            ModelKind::Onnx => {
                let sessions = self.encoders.settings.sessions;
                let model = self
                    .load_onnx(id, move |runtime| OnnxModel::load(runtime, &path, sessions))
                    .await?;
                tracing::info!(model = id, inputs = ?model.inputs(), outputs = ?model.outputs(), "model loaded");
                Ok(Engine::Onnx(Arc::new(model)))
            }
            ModelKind::Vision
            | ModelKind::Speech
            | ModelKind::SentenceTransformers
            | ModelKind::TextGeneration => self.load_in_worker(entry).await,
        }
    }

    /// Has the worker load `entry` (it finds the files through tabagent's file service).
    async fn load_in_worker(&self, entry: &LocalModel) -> Result<Engine, RegistryError> {
        let id = entry.id.clone();
        let worker = self
            .worker
            .get()
            .ok_or_else(|| RegistryError::NoWorker(id.clone()))?;
        let kind = WorkerModel::worker_kind(entry.kind)
            .ok_or_else(|| RegistryError::Interrupted(id.clone()))?;
        let loaded = worker
            .load(tabagent_worker::pb::LoadRequest {
                model_id: id.clone(),
                kind: kind as i32,
            })
            .await
            .map_err(|source| RegistryError::Worker {
                name: id.clone(),
                source,
            })?;
        tracing::info!(model = %id, ram_bytes = loaded.ram_bytes, "model loaded in the ML worker");
        Ok(Engine::Worker(Arc::new(WorkerModel {
            id,
            kind: entry.kind,
            worker: worker.clone(),
        })))
    }

    /// Runs `load` on a blocking thread with the process's ONNX Runtime (loaded on first use).
    async fn load_onnx<T: Send + 'static>(
        &self,
        id: &str,
        load: impl FnOnce(&Arc<OnnxRuntime>) -> Result<T, ModelError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let runtime_config = self.encoders.runtime.clone();
        tokio::task::spawn_blocking(move || load(&OnnxRuntime::get(&runtime_config)?))
            .await
            .map_err(|_| RegistryError::Interrupted(id.to_string()))?
            .map_err(|source| RegistryError::LoadEncoder {
                name: id.to_string(),
                source,
            })
    }

    /// Unloads `name` if it is loaded and idle. Returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> Result<bool, RegistryError> {
        let known = self.lock().contains_key(name);
        let id = if known {
            name.to_string()
        } else {
            self.entry(name).await?.id
        };
        let _admission = self.admission.lock().await;
        let mut models = self.lock();
        let Some(slot) = models.get(&id) else {
            return Ok(false);
        };
        if !idle(slot) {
            return Err(RegistryError::Busy(id));
        }
        models.remove(&id);
        tracing::info!(model = %id, "model unloaded on request");
        Ok(true)
    }

    /// Unloads idle models whose keep-alive has run out, and returns how long until the next
    /// check is due. Models in use have their idle time restarted.
    pub fn expire_idle(&self) -> Duration {
        let now = Instant::now();
        let mut models = self.lock();
        let mut next = MAX_CHECK_INTERVAL;
        models.retain(|id, slot| {
            if !idle(slot) {
                if slot.cell.initialized() {
                    slot.last_used = now;
                }
                // Check again soon: its request may end any moment, and the keep-alive counts
                // from then (to within a second, or less for shorter keep-alives).
                if let KeepAlive::For(keep_alive) = slot.keep_alive {
                    next = next.min(keep_alive.min(BUSY_CHECK_INTERVAL));
                }
                return true;
            }
            let KeepAlive::For(keep_alive) = slot.keep_alive else {
                return true;
            };
            let idle_for = now.saturating_duration_since(slot.last_used);
            if idle_for >= keep_alive {
                tracing::info!(model = %id, ?keep_alive, "model unloaded after its keep-alive");
                return false;
            }
            next = next.min(keep_alive - idle_for);
            true
        });
        next.max(MIN_CHECK_INTERVAL)
    }

    /// Waits until a keep-alive changes (the reaper then checks at once).
    pub async fn keep_alive_changed(&self) {
        self.keep_alive_changed.notified().await;
    }

    /// `name`'s keep-alive, if it is loaded or loading.
    pub fn keep_alive(&self, name: &str) -> Option<KeepAlive> {
        self.lock().get(name).map(|slot| slot.keep_alive)
    }

    /// How long until `name` is unloaded for idleness: `None` when it is not loaded, `Some(None)`
    /// when it stays (kept forever, or in use now: its keep-alive counts from its last request).
    pub fn unloads_in(&self, name: &str) -> Option<Option<Duration>> {
        let models = self.lock();
        let slot = models.get(name)?;
        match slot.keep_alive {
            KeepAlive::For(keep_alive) if idle(slot) => {
                let idle_for = Instant::now().saturating_duration_since(slot.last_used);
                Some(Some(keep_alive.saturating_sub(idle_for)))
            }
            _ => Some(None),
        }
    }

    /// Loaded models and their engines, by id. Never waits for a load in progress.
    pub fn loaded(&self) -> Vec<(String, Engine)> {
        let models = self.lock();
        let mut list: Vec<_> = models
            .iter()
            .filter_map(|(id, slot)| slot.cell.get().map(|e| (id.clone(), e.clone())))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Whether `name` is loaded now (does not wait for a load in progress).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|slot| slot.cell.initialized())
    }

    /// `name`'s state.
    pub fn state(&self, name: &str) -> ModelState {
        match self.lock().get(name) {
            None => ModelState::OnDisk,
            Some(slot) if slot.cell.initialized() => ModelState::Loaded(slot.estimate),
            Some(_) => ModelState::Loading,
        }
    }

    /// Reserves room for `entry` (unloading idle models if needed) and returns its load cell.
    async fn admit(
        &self,
        entry: &LocalModel,
        keep_alive: Option<KeepAlive>,
    ) -> Result<LoadCell, RegistryError> {
        let estimate = self.estimate(entry).await?;
        let _admission = self.admission.lock().await;
        let mut models = self.lock();
        if let Some(slot) = models.get_mut(&entry.id) {
            slot.last_used = Instant::now();
            self.set_keep_alive(slot, keep_alive);
            return Ok(Arc::clone(&slot.cell));
        }
        let budget = self.lifecycle.budget_bytes;
        let mut used: u64 = models.values().map(|slot| slot.estimate).sum();
        if used.saturating_add(estimate) > budget {
            let mut idle_models: Vec<(String, Instant, u64)> = models
                .iter()
                .filter(|(_, slot)| idle(slot))
                .map(|(id, slot)| (id.clone(), slot.last_used, slot.estimate))
                .collect();
            idle_models.sort_by_key(|(_, last_used, _)| *last_used);
            let freeable: u64 = idle_models.iter().map(|(_, _, bytes)| bytes).sum();
            if used - freeable + estimate > budget {
                let busy: Vec<String> = models
                    .iter()
                    .filter(|(_, slot)| !idle(slot))
                    .map(|(id, _)| id.clone())
                    .collect();
                return Err(RegistryError::OverBudget {
                    name: entry.id.clone(),
                    needed_mib: estimate >> 20,
                    free_mib: budget.saturating_sub(used - freeable) >> 20,
                    budget_mib: budget >> 20,
                    busy: if busy.is_empty() {
                        "nothing".to_string()
                    } else {
                        busy.join(", ")
                    },
                });
            }
            for (id, _, bytes) in idle_models {
                if used.saturating_add(estimate) <= budget {
                    break;
                }
                models.remove(&id);
                used -= bytes;
                tracing::info!(model = %id, for_model = %entry.id, "unloaded the least recently used idle model to make room");
            }
        }
        let cell = LoadCell::default();
        let default_keep_alive = if self.lifecycle.pinned.as_deref() == Some(entry.id.as_str()) {
            KeepAlive::Forever
        } else {
            self.lifecycle.keep_alive
        };
        models.insert(
            entry.id.clone(),
            Slot {
                cell: Arc::clone(&cell),
                estimate,
                last_used: Instant::now(),
                keep_alive: keep_alive.unwrap_or(default_keep_alive),
            },
        );
        self.keep_alive_changed.notify_one();
        Ok(cell)
    }

    async fn estimate(&self, entry: &LocalModel) -> Result<u64, RegistryError> {
        if entry.kind != ModelKind::Gguf {
            // ONNX Runtime holds the weights and a pre-packed copy for its matrix kernels, plus
            // activations of the largest batch (a few tens of MiB for small encoders).
            return Ok(entry.size_bytes.saturating_mul(2).saturating_add(64 << 20));
        }
        let path = entry.path.clone();
        let context =
            u64::from(self.engine_config.parallel) * u64::from(self.engine_config.ctx_per_slot);
        let id = entry.id.clone();
        tokio::task::spawn_blocking(move || tabagent_models::gguf::inspect_file(&path))
            .await
            .map_err(|_| RegistryError::Interrupted(id.clone()))?
            .map(|info| info.memory_estimate(context).total())
            .map_err(|err| RegistryError::Load {
                name: id,
                source: LoadError::InvalidFile {
                    path: entry.path.display().to_string(),
                    source: err,
                },
            })
    }

    /// The engine for `id` if loaded, marking it used (and setting its keep-alive if given).
    fn touch(&self, id: &str, keep_alive: Option<KeepAlive>) -> Option<Engine> {
        let mut models = self.lock();
        let slot = models.get_mut(id)?;
        let engine = slot.cell.get().cloned()?;
        slot.last_used = Instant::now();
        self.set_keep_alive(slot, keep_alive);
        Some(engine)
    }

    /// Applies a request's keep-alive, if it gave one, and wakes the reaper to reckon with it.
    fn set_keep_alive(&self, slot: &mut Slot, keep_alive: Option<KeepAlive>) {
        if let Some(keep_alive) = keep_alive {
            slot.keep_alive = keep_alive;
            self.keep_alive_changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn entry(&self, name: &str) -> Result<LocalModel, RegistryError> {
        let catalog = self.catalog.clone();
        let owned = name.to_string();
        tokio::task::spawn_blocking(move || catalog.resolve(&owned))
            .await
            .map_err(|_| RegistryError::Interrupted(name.to_string()))??
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }
}

/// The reaper checks at least this often (a keep-alive set by a request wakes it at once).
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// While a model with a finite keep-alive is in use, this often.
const BUSY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// ... and at most this often: a keep-alive of zero unloads within this of the request's end.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Loaded, and nobody is using it: no sequence running or queued, and no handler holding the
/// engine between looking it up and submitting to it.
fn idle(slot: &Slot) -> bool {
    slot.cell.get().is_some_and(Engine::is_idle) // a loading model is not idle
}
