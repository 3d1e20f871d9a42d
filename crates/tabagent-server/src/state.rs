//! The state every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

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
    memory: Option<crate::memory_backend::MemoryBackend>,
    ready: AtomicBool,
    startup_error: Mutex<Option<String>>,
    /// Conversations due a summary, for the background summarizer.
    summaries_due: OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Routes chat requests to remote engines (set once, after the state exists, because its
    /// local provider refers back to it).
    router: OnceLock<tabagent_router::Router>,
    metrics: Arc<crate::metrics::Metrics>,
    cache: tabagent_router::ResponseCache,
    scheduler: Arc<tabagent_router::Scheduler>,
    callers: crate::callers::Callers,
    /// The Python ML worker's client, when it runs.
    worker: OnceLock<tabagent_worker::Worker>,
    /// WebRTC sessions, when this server offers them (`--mode web`, `webrtc`, `all`).
    webrtc: OnceLock<Arc<tabagent_webrtc::Sessions>>,
    /// The HTTP routes the in-process transports dispatch through (held by `serve`; weak here,
    /// or the state would keep itself alive and its models would never be unloaded).
    in_process_router: OnceLock<std::sync::Weak<axum::Router>>,
}

/// A handle on the state that does not keep it alive (for background tasks).
#[derive(Clone)]
pub struct WeakAppState(Weak<Inner>);

impl WeakAppState {
    /// The state, while the server holds it.
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

impl AppState {
    /// State for `config` over `registry`.
    pub fn new(
        config: Config,
        registry: ModelRegistry,
        memory: Option<crate::memory_backend::MemoryBackend>,
    ) -> Result<Self, tabagent_router::ConfigError> {
        let cache = tabagent_router::ResponseCache::new(config.response_cache.clone())?;
        let scheduler = Arc::new(config.scheduler());
        let callers = crate::callers::Callers::from_config(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                registry,
                memory,
                ready: AtomicBool::new(false),
                startup_error: Mutex::new(None),
                summaries_due: OnceLock::new(),
                router: OnceLock::new(),
                metrics: Arc::default(),
                cache,
                scheduler,
                callers,
                worker: OnceLock::new(),
                webrtc: OnceLock::new(),
                in_process_router: OnceLock::new(),
            }),
        })
    }

    /// A handle that does not keep the state alive.
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.inner))
    }

    /// Where conversations due a summary are sent; set once, by the summarizer.
    pub fn summaries_due(&self) -> &OnceLock<tokio::sync::mpsc::UnboundedSender<String>> {
        &self.inner.summaries_due
    }

    /// The response cache.
    pub fn cache(&self) -> &tabagent_router::ResponseCache {
        &self.inner.cache
    }

    /// Priorities, queues, concurrency limits and per-caller limits.
    pub fn scheduler(&self) -> &Arc<tabagent_router::Scheduler> {
        &self.inner.scheduler
    }

    /// The API keys accepted and who each stands for.
    pub fn callers(&self) -> &crate::callers::Callers {
        &self.inner.callers
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Starts offering WebRTC sessions.
    pub fn enable_webrtc(&self, settings: tabagent_webrtc::Settings) {
        let _ = self
            .inner
            .webrtc
            .set(Arc::new(tabagent_webrtc::Sessions::new(settings)));
    }

    /// Makes `router` the one [`AppState::in_process_router`] gives, for as long as the caller
    /// keeps it.
    pub fn share_in_process_router(&self, router: &Arc<axum::Router>) {
        let _ = self.inner.in_process_router.set(Arc::downgrade(router));
    }

    /// The HTTP routes, for a transport that dispatches requests in-process (a WebRTC data
    /// channel, native messaging): the shared ones, else new ones. Building them takes 1 ms,
    /// and up to 20 under load (the OpenAPI document and every route), too much per session.
    pub fn in_process_router(&self) -> axum::Router {
        self.inner
            .in_process_router
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or_else(
                || crate::http::router(self.clone()),
                |router| (*router).clone(),
            )
    }

    /// The WebRTC sessions, when this server offers them.
    pub fn webrtc(&self) -> Option<&Arc<tabagent_webrtc::Sessions>> {
        self.inner.webrtc.get()
    }

    /// Sets the ML worker's client (once), for the registry's worker models too.
    pub fn set_worker(&self, worker: tabagent_worker::Worker) {
        self.inner.registry.set_worker(worker.clone());
        let _ = self.inner.worker.set(worker);
    }

    /// The ML worker's client, or a 503 saying why there is none.
    pub fn worker(&self) -> Result<&tabagent_worker::Worker, crate::http::error::ApiError> {
        self.inner.worker.get().ok_or_else(|| {
            let why = match self.config().worker.mode {
                crate::config::WorkerMode::Off => "the ML worker is off (worker.mode = \"off\")",
                _ => "the ML worker is not set up: run `tabagent worker setup` (or set worker.mode = \"on\")",
            };
            crate::http::error::ApiError::unavailable("worker_not_set_up", why)
        })
    }

    /// The router, once set.
    pub fn router(&self) -> Option<&tabagent_router::Router> {
        self.inner.router.get()
    }

    /// Sets the router (once; later calls are ignored).
    pub fn set_router(&self, router: tabagent_router::Router) {
        let _ = self.inner.router.set(router);
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
    pub fn memory(&self) -> Option<&crate::memory_backend::MemoryBackend> {
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
