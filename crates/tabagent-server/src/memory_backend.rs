//! The memory the server uses: its own (the embedded store) or another process's over gRPC
//! (`memory.remote`), behind one [`MemoryApi`] so handlers do not know which.

use tabagent_memory::{
    Change, ConsolidateOptions, Entity, EntityRef, Filter, GraphPath, LocalMemory, MemoryApi,
    MemoryResult, Merge, Neighbourhood, Order, Outcome, Page, Record, Relation, SearchRequest,
    SearchResults, Stats, Store, WalkOptions,
};
use tabagent_memory_grpc::RemoteMemory;

/// The embedded store, or a remote one.
#[derive(Debug, Clone)]
pub enum MemoryBackend {
    /// In this process.
    Local(LocalMemory),
    /// Served by `tabagent memory serve` elsewhere.
    Remote(RemoteMemory),
}

/// Calls the same method on whichever backend this is.
macro_rules! both {
    ($self:ident, $m:ident => $call:expr) => {
        match $self {
            MemoryBackend::Local($m) => $call.await,
            MemoryBackend::Remote($m) => $call.await,
        }
    };
}

impl MemoryApi for MemoryBackend {
    async fn apply(&self, changes: Vec<Change>) -> MemoryResult<Vec<Outcome>> {
        both!(self, m => m.apply(changes))
    }

    async fn get(&self, id: i64) -> MemoryResult<Record> {
        both!(self, m => m.get(id))
    }

    async fn get_by_key(&self, store: Store, key: String) -> MemoryResult<Option<Record>> {
        both!(self, m => m.get_by_key(store, key))
    }

    async fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> MemoryResult<Page> {
        both!(self, m => m.list(filter, order, limit, after))
    }

    async fn search(&self, request: SearchRequest) -> MemoryResult<SearchResults> {
        both!(self, m => m.search(request))
    }

    async fn stats(&self) -> MemoryResult<Stats> {
        both!(self, m => m.stats())
    }

    async fn entity(&self, reference: EntityRef) -> MemoryResult<Entity> {
        both!(self, m => m.entity(reference))
    }

    async fn relation(&self, id: i64) -> MemoryResult<Relation> {
        both!(self, m => m.relation(id))
    }

    async fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Neighbourhood> {
        both!(self, m => m.neighbourhood(start, hops, options))
    }

    async fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Option<GraphPath>> {
        both!(self, m => m.shortest_path(from, to, max_hops, options))
    }

    async fn duplicate_entities(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        both!(self, m => m.duplicate_entities(options))
    }

    async fn consolidate(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        both!(self, m => m.consolidate(options))
    }
}
