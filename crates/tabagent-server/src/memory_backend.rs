//! The memory the server uses: its own (the embedded store), another process's over gRPC
//! (`memory.remote`) or a PostgreSQL database (`memory.postgres`), behind one [`MemoryApi`] so
//! handlers do not know which.

use std::sync::Arc;
use tabagent_memory::{
    Change, ConsolidateOptions, Entity, EntityRef, Filter, GraphPath, LocalMemory, MemoryApi,
    MemoryResult, Merge, Neighbourhood, Order, Outcome, Page, PgMemory, Record, Relation,
    SearchRequest, SearchResults, Stats, Store, WalkOptions,
};

use anyhow::{bail, Context};
use tabagent_memory::Memory;
use tabagent_memory_grpc::RemoteMemory;

use crate::config::Config;

/// The memory, wherever it is; its writes are told to the events (`[events]`) when they are on.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    store: Backend,
    events: Option<crate::events::Events>,
}

/// The embedded store, or a remote one.
#[derive(Debug, Clone)]
enum Backend {
    /// In this process.
    Local(LocalMemory),
    /// Served by `tabagent memory serve` elsewhere.
    Remote(RemoteMemory),
    /// In PostgreSQL with pgvector.
    Postgres(PgMemory),
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $m:ident => $call:expr) => {
        match &$self.store {
            Backend::Local($m) => $call.await,
            Backend::Remote($m) => $call.await,
            Backend::Postgres($m) => $call.await,
        }
    };
}

impl MemoryBackend {
    fn new(store: Backend) -> Self {
        Self {
            store,
            events: None,
        }
    }

    /// Tells `events` of every write from now on.
    pub fn publishing(mut self, events: Option<crate::events::Events>) -> Self {
        self.events = events;
        self
    }

    /// The memory `config` names: PostgreSQL (`memory.postgres`), a memory service
    /// (`memory.remote`) or the embedded database.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let settings = &config.memory;
        match (&settings.remote, &settings.postgres) {
            (Some(_), Some(_)) => {
                bail!("memory.remote and memory.postgres are both set: choose one")
            }
            (Some(url), None) => {
                let key = settings
                    .remote_api_key
                    .as_ref()
                    .map(tabagent_core::Secret::expose);
                // Shown without any credentials the URL carries.
                let shown = tabagent_core::secret::redact_credentials(url);
                let ca = match &settings.remote_ca {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("memory.remote_ca: cannot read {}", path.display())
                    })?),
                    None => None,
                };
                let remote = RemoteMemory::connect_lazy(url, key, ca.as_deref())
                    .with_context(|| format!("memory.remote `{shown}`"))?;
                tracing::info!(url = %shown, "memory: the remote service");
                Ok(Self::new(Backend::Remote(remote)))
            }
            (None, Some(url)) => {
                // The URL may hold a password: it is not repeated in messages.
                let memory = PgMemory::connect(url.expose(), config.memory_config().limits)
                    .await
                    .context("memory.postgres: cannot use the database")?;
                tracing::info!("memory: PostgreSQL");
                Ok(Self::new(Backend::Postgres(memory)))
            }
            (None, None) => {
                let memory_config = config.memory_config();
                let path = memory_config.path.clone();
                let memory = tokio::task::spawn_blocking(move || Memory::open(&memory_config))
                    .await?
                    .with_context(|| format!("cannot open the memory in {}", path.display()))?;
                Ok(Self::new(Backend::Local(LocalMemory(Arc::new(memory)))))
            }
        }
    }
}

impl MemoryApi for MemoryBackend {
    async fn apply(&self, changes: Vec<Change>) -> MemoryResult<Vec<Outcome>> {
        let outcomes = dispatch!(self, m => m.apply(changes))?;
        if let Some(events) = &self.events {
            events.memory_written(&outcomes).await;
        }
        Ok(outcomes)
    }

    async fn get(&self, id: i64) -> MemoryResult<Record> {
        dispatch!(self, m => m.get(id))
    }

    async fn get_by_key(&self, store: Store, key: String) -> MemoryResult<Option<Record>> {
        dispatch!(self, m => m.get_by_key(store, key))
    }

    async fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> MemoryResult<Page> {
        dispatch!(self, m => m.list(filter, order, limit, after))
    }

    async fn search(&self, request: SearchRequest) -> MemoryResult<SearchResults> {
        dispatch!(self, m => m.search(request))
    }

    async fn stats(&self) -> MemoryResult<Stats> {
        dispatch!(self, m => m.stats())
    }

    async fn entity(&self, reference: EntityRef) -> MemoryResult<Entity> {
        dispatch!(self, m => m.entity(reference))
    }

    async fn relation(&self, id: i64) -> MemoryResult<Relation> {
        dispatch!(self, m => m.relation(id))
    }

    async fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Neighbourhood> {
        dispatch!(self, m => m.neighbourhood(start, hops, options))
    }

    async fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Option<GraphPath>> {
        dispatch!(self, m => m.shortest_path(from, to, max_hops, options))
    }

    async fn duplicate_entities(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        dispatch!(self, m => m.duplicate_entities(options))
    }

    async fn consolidate(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        dispatch!(self, m => m.consolidate(options))
    }
}
