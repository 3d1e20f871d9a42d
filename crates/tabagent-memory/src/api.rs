//! [`MemoryApi`]: the memory's operations as one async interface, implemented by the embedded
//! store ([`LocalMemory`]) and by remote clients (gRPC), so callers switch between them by
//! configuration and one test suite holds them all to the same behaviour.

use std::future::Future;
use std::sync::Arc;

use crate::{
    Change, ConsolidateOptions, Entity, EntityRef, Filter, GraphPath, Memory, MemoryError, Merge,
    Neighbourhood, Order, Outcome, Page, Record, Relation, SearchRequest, SearchResults, Stats,
    Store, WalkOptions,
};

/// The result of every memory operation.
pub type MemoryResult<T> = Result<T, MemoryError>;

/// Everything a caller does with a memory, wherever it lives.
pub trait MemoryApi: Send + Sync {
    /// Applies `changes` all together or not at all.
    fn apply(
        &self,
        changes: Vec<Change>,
    ) -> impl Future<Output = MemoryResult<Vec<Outcome>>> + Send;
    /// One record.
    fn get(&self, id: i64) -> impl Future<Output = MemoryResult<Record>> + Send;
    /// The record with `key` in `store`.
    fn get_by_key(
        &self,
        store: Store,
        key: String,
    ) -> impl Future<Output = MemoryResult<Option<Record>>> + Send;
    /// Records matching `filter`, a page at a time.
    fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> impl Future<Output = MemoryResult<Page>> + Send;
    /// Keyword, vector or hybrid search.
    fn search(
        &self,
        request: SearchRequest,
    ) -> impl Future<Output = MemoryResult<SearchResults>> + Send;
    /// What the memory holds.
    fn stats(&self) -> impl Future<Output = MemoryResult<Stats>> + Send;
    /// The entity `reference` names.
    fn entity(&self, reference: EntityRef) -> impl Future<Output = MemoryResult<Entity>> + Send;
    /// One relation.
    fn relation(&self, id: i64) -> impl Future<Output = MemoryResult<Relation>> + Send;
    /// The entities within `hops` of `start`.
    fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> impl Future<Output = MemoryResult<Neighbourhood>> + Send;
    /// A shortest path, if there is one within `max_hops`.
    fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> impl Future<Output = MemoryResult<Option<GraphPath>>> + Send;
    /// The merges [`MemoryApi::consolidate`] would make.
    fn duplicate_entities(
        &self,
        options: ConsolidateOptions,
    ) -> impl Future<Output = MemoryResult<Vec<Merge>>> + Send;
    /// Merges duplicate entities.
    fn consolidate(
        &self,
        options: ConsolidateOptions,
    ) -> impl Future<Output = MemoryResult<Vec<Merge>>> + Send;

    /// Writes one record.
    fn insert(
        &self,
        store: Store,
        record: crate::NewRecord,
    ) -> impl Future<Output = MemoryResult<Record>> + Send {
        async move {
            match self
                .apply(vec![Change::Insert { store, record }])
                .await?
                .pop()
            {
                Some(Outcome::Inserted { record }) => Ok(record),
                _ => Err(MemoryError::Unavailable("no record came back".into())),
            }
        }
    }

    /// Deletes one record.
    fn delete(&self, id: i64) -> impl Future<Output = MemoryResult<()>> + Send {
        async move { self.apply(vec![Change::Delete { id }]).await.map(|_| ()) }
    }

    /// Creates an entity or folds it into the one with its name.
    fn upsert_entity(
        &self,
        entity: crate::NewEntity,
    ) -> impl Future<Output = MemoryResult<Entity>> + Send {
        async move {
            match self.apply(vec![Change::Entity { entity }]).await?.pop() {
                Some(Outcome::Entity { entity }) => Ok(entity),
                _ => Err(MemoryError::Unavailable("no entity came back".into())),
            }
        }
    }

    /// Records a relation.
    fn relate(
        &self,
        relation: crate::NewRelation,
    ) -> impl Future<Output = MemoryResult<Relation>> + Send {
        async move {
            match self.apply(vec![Change::Relate { relation }]).await?.pop() {
                Some(Outcome::Related { relation }) => Ok(relation),
                _ => Err(MemoryError::Unavailable("no relation came back".into())),
            }
        }
    }
}

/// The embedded store behind [`MemoryApi`]: each call runs on a blocking thread.
#[derive(Debug, Clone)]
pub struct LocalMemory(pub Arc<Memory>);

impl LocalMemory {
    async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Memory) -> MemoryResult<T> + Send + 'static,
    ) -> MemoryResult<T> {
        let memory = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || call(&memory))
            .await
            .map_err(|e| MemoryError::Unavailable(format!("a memory call panicked: {e}")))?
    }
}

impl MemoryApi for LocalMemory {
    async fn apply(&self, changes: Vec<Change>) -> MemoryResult<Vec<Outcome>> {
        self.run(move |m| m.apply(changes)).await
    }

    async fn get(&self, id: i64) -> MemoryResult<Record> {
        self.run(move |m| m.get(id)).await
    }

    async fn get_by_key(&self, store: Store, key: String) -> MemoryResult<Option<Record>> {
        self.run(move |m| m.get_by_key(store, &key)).await
    }

    async fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> MemoryResult<Page> {
        self.run(move |m| m.list(&filter, order, limit, after))
            .await
    }

    async fn search(&self, request: SearchRequest) -> MemoryResult<SearchResults> {
        self.run(move |m| m.search(&request)).await
    }

    async fn stats(&self) -> MemoryResult<Stats> {
        self.run(|m| m.stats()).await
    }

    async fn entity(&self, reference: EntityRef) -> MemoryResult<Entity> {
        self.run(move |m| m.entity(&reference)).await
    }

    async fn relation(&self, id: i64) -> MemoryResult<Relation> {
        self.run(move |m| m.relation(id)).await
    }

    async fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Neighbourhood> {
        self.run(move |m| m.neighbourhood(&start, hops, &options))
            .await
    }

    async fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Option<GraphPath>> {
        self.run(move |m| m.shortest_path(&from, &to, max_hops, &options))
            .await
    }

    async fn duplicate_entities(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        self.run(move |m| m.duplicate_entities(&options)).await
    }

    async fn consolidate(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        self.run(move |m| m.consolidate(&options)).await
    }
}
