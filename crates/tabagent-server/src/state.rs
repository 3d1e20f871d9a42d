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
    registry: Arc<ModelRegistry>,
    memory: Option<crate::memory_backend::MemoryBackend>,
    ready: AtomicBool,
    startup_error: Mutex<Option<String>>,
    /// Conversations due a summary, for the background summarizer.
    summaries_due: tokio::sync::mpsc::UnboundedSender<String>,
    /// Routes chat requests to remote engines and the local one.
    router: tabagent_router::Router,
    metrics: Arc<crate::metrics::Metrics>,
    cache: tabagent_router::ResponseCache,
    scheduler: Arc<tabagent_router::Scheduler>,
    callers: crate::callers::Callers,
    /// Downloads running through the API.
    pulls: Arc<crate::pull_slots::PullSlots>,
    /// The Python ML worker's client, when it runs.
    worker: Option<tabagent_worker::Worker>,
    /// WebRTC sessions, when this server offers them (`--mode web`, `webrtc`, `all`).
    webrtc: Option<Arc<tabagent_webrtc::Sessions>>,
    /// What the agent's tools need (the sandbox, the workspace folders).
    agent_kit: crate::agent::Kit,
    /// The HTTP app the in-process transports dispatch through. It is built from the state, so
    /// it cannot be part of it: `serve` shares it once built, and it is held weakly here, or the
    /// state would keep itself alive and its models would never be unloaded.
    in_process_app: OnceLock<std::sync::Weak<axum::Router>>,
    /// The documents, made on first use (it loads the embedding model).
    librarian: tokio::sync::OnceCell<Arc<crate::librarian::Shelf>>,
    /// The followed folders' watch, while the server runs.
    following: Mutex<Option<tabagent_librarian::Following>>,
    /// What the librarian does, for `/v1/documents/events`.
    library_events: tokio::sync::broadcast::Sender<crate::librarian::LibraryEvent>,
    /// Whether the followed folders' first scan has ended.
    library_scanned: AtomicBool,
    /// Events out through Redis Streams (`[events]`), when on.
    events: Option<crate::events::Events>,
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

/// The parts of an [`AppState`]: what the configuration alone decides is made (and checked) by
/// [`AppState::builder`], before any process starts; the rest is given, then [`build`] puts it
/// together in one pass.
///
/// [`build`]: AppStateBuilder::build
pub struct AppStateBuilder {
    config: Config,
    registry: Arc<ModelRegistry>,
    router: tabagent_router::Router,
    cache: tabagent_router::ResponseCache,
    scheduler: Arc<tabagent_router::Scheduler>,
    callers: crate::callers::Callers,
    memory: Option<crate::memory_backend::MemoryBackend>,
    worker: Option<tabagent_worker::Worker>,
    webrtc: Option<tabagent_webrtc::Settings>,
    agent_kit: crate::agent::Kit,
    events: Option<crate::events::Events>,
}

impl AppStateBuilder {
    /// Events out through Redis Streams (none: `[events]` is off).
    pub fn events(mut self, events: Option<crate::events::Events>) -> Self {
        self.events = events;
        self
    }

    /// The memory stores (none: `memory.enabled` is off).
    pub fn memory(mut self, memory: Option<crate::memory_backend::MemoryBackend>) -> Self {
        self.memory = memory;
        self
    }

    /// Whether the memory is on.
    pub fn memory_enabled(&self) -> bool {
        self.memory.is_some()
    }

    /// The ML worker's client, when it runs.
    pub fn worker(mut self, worker: Option<tabagent_worker::Worker>) -> Self {
        self.worker = worker;
        self
    }

    /// Offer WebRTC sessions with `settings`.
    pub fn webrtc(mut self, settings: Option<tabagent_webrtc::Settings>) -> Self {
        self.webrtc = settings;
        self
    }

    /// What the agent's tools need.
    pub fn agent_kit(mut self, kit: crate::agent::Kit) -> Self {
        self.agent_kit = kit;
        self
    }

    /// The state, and the queue of conversations due a summary (for `summaries::start`).
    pub fn build(self) -> (AppState, tokio::sync::mpsc::UnboundedReceiver<String>) {
        if let Some(worker) = &self.worker {
            self.registry.set_worker(worker.clone());
        }
        let (summaries_due, due) = tokio::sync::mpsc::unbounded_channel();
        let pulls = crate::pull_slots::PullSlots::new(
            self.config.hub.max_pulls,
            self.config.hub.max_pulls_per_caller,
        );
        let state = AppState {
            inner: Arc::new(Inner {
                config: self.config,
                registry: self.registry,
                memory: self.memory,
                ready: AtomicBool::new(false),
                startup_error: Mutex::new(None),
                summaries_due,
                router: self.router,
                metrics: Arc::default(),
                cache: self.cache,
                scheduler: self.scheduler,
                pulls,
                callers: self.callers,
                worker: self.worker,
                webrtc: self
                    .webrtc
                    .map(|settings| Arc::new(tabagent_webrtc::Sessions::new(settings))),
                agent_kit: self.agent_kit,
                in_process_app: OnceLock::new(),
                librarian: tokio::sync::OnceCell::new(),
                following: Mutex::new(None),
                library_events: tokio::sync::broadcast::channel(256).0,
                library_scanned: AtomicBool::new(false),
                events: self.events,
            }),
        };
        (state, due)
    }
}

impl AppState {
    /// The state for `config` over `registry`: the caches, scheduler, callers and router made
    /// now (a configuration error ends here, before any process starts), the rest given to the
    /// builder.
    pub fn builder(
        config: Config,
        registry: ModelRegistry,
    ) -> Result<AppStateBuilder, tabagent_router::ConfigError> {
        let cache = tabagent_router::ResponseCache::new(config.response_cache.clone())?;
        let scheduler = Arc::new(config.scheduler());
        let callers = crate::callers::Callers::from_config(&config)?;
        let registry = Arc::new(registry);
        let router = crate::routing::router(&config, &registry, &scheduler)?;
        Ok(AppStateBuilder {
            config,
            registry,
            router,
            cache,
            scheduler,
            callers,
            memory: None,
            worker: None,
            webrtc: None,
            agent_kit: crate::agent::Kit::default(),
            events: None,
        })
    }

    /// The documents in the memory (made on first use: it loads the memory's embedding model).
    pub async fn librarian(
        &self,
    ) -> Result<Arc<crate::librarian::Shelf>, crate::error::ServiceError> {
        self.inner
            .librarian
            .get_or_try_init(|| crate::librarian::open(self))
            .await
            .cloned()
    }

    /// Tells `/v1/documents/events` listeners (and the events stream, when on) what the
    /// librarian did.
    pub fn library_event(&self, event: crate::librarian::LibraryEvent) {
        if let Some(events) = &self.inner.events {
            events.library_event(&event);
        }
        // No listener is not an error.
        let _ = self.inner.library_events.send(event);
    }

    /// Events out through Redis Streams, when `[events]` is on.
    pub fn events(&self) -> Option<&crate::events::Events> {
        self.inner.events.as_ref()
    }

    /// The librarian's events from now on.
    pub fn library_events(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::librarian::LibraryEvent> {
        self.inner.library_events.subscribe()
    }

    /// Records that the followed folders' scan ended.
    pub fn set_library_scanned(&self) {
        self.inner.library_scanned.store(true, Ordering::SeqCst);
    }

    /// Whether the followed folders' scan has ended.
    pub fn library_scanned(&self) -> bool {
        self.inner.library_scanned.load(Ordering::SeqCst)
    }

    /// Keeps the followed folders' watch until the server stops.
    pub fn keep_following(&self, following: tabagent_librarian::Following) {
        *self
            .inner
            .following
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(following);
    }

    /// A handle that does not keep the state alive.
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.inner))
    }

    /// Tells the summarizer `conversation` grew.
    pub fn summary_due(&self, conversation: String) {
        // The summarizer is gone only when the server is stopping.
        let _ = self.inner.summaries_due.send(conversation);
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

    /// The downloads running through the API.
    pub fn pulls(&self) -> &Arc<crate::pull_slots::PullSlots> {
        &self.inner.pulls
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// Makes `app` the one [`AppState::in_process_app`] gives, for as long as the caller
    /// keeps it.
    pub fn share_in_process_app(&self, app: &Arc<axum::Router>) {
        let _ = self.inner.in_process_app.set(Arc::downgrade(app));
    }

    /// The HTTP routes, for a transport that dispatches requests in-process (a WebRTC data
    /// channel, native messaging): the shared ones, else new ones. Building them takes 1 ms,
    /// and up to 20 under load (the OpenAPI document and every route), too much per session.
    pub fn in_process_app(&self) -> axum::Router {
        self.inner
            .in_process_app
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or_else(|| crate::http::app(self.clone()), |app| (*app).clone())
    }

    /// The WebRTC sessions, when this server offers them.
    pub fn webrtc(&self) -> Option<&Arc<tabagent_webrtc::Sessions>> {
        self.inner.webrtc.as_ref()
    }

    /// The ML worker's client, or a 503 saying why there is none.
    pub fn worker(&self) -> Result<&tabagent_worker::Worker, crate::http::error::ApiError> {
        self.inner.worker.as_ref().ok_or_else(|| {
            let why = match self.config().worker.mode {
                crate::config::WorkerMode::Off => "the ML worker is off (worker.mode = \"off\")",
                _ => "the ML worker is not set up: run `tabagent worker setup` (or set worker.mode = \"on\")",
            };
            crate::http::error::ApiError::unavailable("worker_not_set_up", why)
        })
    }

    /// The router: remote providers and the local engine.
    pub fn router(&self) -> &tabagent_router::Router {
        &self.inner.router
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

    /// What the agent's tools need.
    pub fn agent_kit(&self) -> &crate::agent::Kit {
        &self.inner.agent_kit
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
