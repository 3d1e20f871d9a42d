//! Loaded models by name: loads from the store on first use and keeps them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogError, LocalModel};
use tabagent_llama::{EngineConfig, LlamaEngine, LoadError};
use tokio::sync::OnceCell;

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
    /// The loading task died.
    #[error("loading the model `{0}` was interrupted")]
    Interrupted(String),
}

/// A model's load, shared by every request that needs it while it happens.
type LoadCell = Arc<OnceCell<Arc<LlamaEngine>>>;

/// Models loaded in this process.
///
/// Each name has its own load cell, so loading one model never blocks requests to another,
/// listings or health checks.
pub struct ModelRegistry {
    catalog: Catalog,
    engine_config: EngineConfig,
    models: std::sync::Mutex<HashMap<String, LoadCell>>,
}

impl ModelRegistry {
    /// A registry over `catalog` that loads models with `engine_config`.
    pub fn new(catalog: Catalog, engine_config: EngineConfig) -> Self {
        Self {
            catalog,
            engine_config,
            models: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The local models behind it.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The engine for `name`, loading it if needed. Concurrent callers share one load.
    pub async fn get(&self, name: &str) -> Result<Arc<LlamaEngine>, RegistryError> {
        if let Some(engine) = self.loaded_engine(name) {
            return Ok(engine);
        }
        // Only ids of local models get a cell: a client cannot grow the map with made-up names.
        // Cells are keyed by the canonical id, so two spellings of one model load it once.
        let entry = self.entry(name).await?;
        if let Some(engine) = self.loaded_engine(&entry.id) {
            return Ok(engine);
        }
        let cell = self.cell(&entry.id);
        let name = entry.id.as_str();
        let engine = cell
            .get_or_try_init(|| async {
                let path = entry.path.clone();
                let config = self.engine_config.clone();
                tracing::info!(model = name, path = %path.display(), "loading model");
                let engine = tokio::task::spawn_blocking(move || LlamaEngine::load(&path, config))
                    .await
                    .map_err(|_| RegistryError::Interrupted(name.to_string()))?
                    .map_err(|source| RegistryError::Load {
                        name: name.to_string(),
                        source,
                    })?;
                tracing::info!(model = name, facts = ?engine.facts(), "model loaded");
                Ok::<_, RegistryError>(Arc::new(engine))
            })
            .await?;
        Ok(Arc::clone(engine))
    }

    /// Loaded models and their engines, by name. Never waits for a load in progress.
    pub fn loaded(&self) -> Vec<(String, Arc<LlamaEngine>)> {
        let models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<_> = models
            .iter()
            .filter_map(|(name, cell)| cell.get().map(|engine| (name.clone(), Arc::clone(engine))))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Whether `name` is loaded now (does not wait for a load in progress).
    pub fn is_loaded(&self, name: &str) -> bool {
        let models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        models.get(name).is_some_and(|cell| cell.initialized())
    }

    fn loaded_engine(&self, name: &str) -> Option<Arc<LlamaEngine>> {
        let models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        models.get(name).and_then(|cell| cell.get()).map(Arc::clone)
    }

    fn cell(&self, name: &str) -> LoadCell {
        let mut models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(models.entry(name.to_string()).or_default())
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
