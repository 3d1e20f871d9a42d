//! The state every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::registry::ModelRegistry;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    registry: ModelRegistry,
    memory: Option<Arc<tabagent_memory::Memory>>,
    ready: AtomicBool,
    startup_error: Mutex<Option<String>>,
}

impl AppState {
    /// State for `config` over `registry`.
    pub fn new(
        config: Config,
        registry: ModelRegistry,
        memory: Option<Arc<tabagent_memory::Memory>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                registry,
                memory,
                ready: AtomicBool::new(false),
                startup_error: Mutex::new(None),
            }),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Loaded and loadable models.
    pub fn registry(&self) -> &ModelRegistry {
        &self.inner.registry
    }

    /// The memory stores, unless `memory.enabled` is off.
    pub fn memory(&self) -> Option<&Arc<tabagent_memory::Memory>> {
        self.inner.memory.as_ref()
    }

    /// Whether start-up work (the default model's load) is done.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
            || self.registry().is_loaded(&self.config().models.default)
    }

    /// Why start-up work failed, if it did.
    pub fn startup_error(&self) -> Option<String> {
        self.inner
            .startup_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or(None)
    }

    /// Records that start-up work failed.
    pub fn set_startup_error(&self, error: String) {
        if let Ok(mut slot) = self.inner.startup_error.lock() {
            *slot = Some(error);
        }
    }

    /// Marks start-up work done.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }
}
