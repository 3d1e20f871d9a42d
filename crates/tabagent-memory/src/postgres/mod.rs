//! The memory in PostgreSQL with pgvector, for deployments that outgrow one machine: several
//! tabagent servers share one database, and PostgreSQL's replication, backups and tooling
//! apply. It implements [`MemoryApi`] with the embedded store's rules (the same checks, graph
//! walks, merge planning and rank fusion run here), so callers cannot tell them apart except
//! by the scores: keyword scores are PostgreSQL's `ts_rank_cd` rather than BM25.
//!
//! Every [`MemoryApi::apply`] is one transaction. Graph changes take a transaction-scoped
//! advisory lock, so entity names stay unique across writers in any number of processes.

mod graph;
mod records;
mod schema;
mod search;
mod tls;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::api::{MemoryApi, MemoryResult};
use crate::graph::walk;
use crate::{
    Change, ConsolidateOptions, Entity, EntityRef, Filter, GraphPath, Limits, MemoryError, Merge,
    Neighbourhood, Order, Outcome, Page, Record, Relation, SearchRequest, SearchResults, Stats,
    Store, WalkOptions,
};

/// A memory held in a PostgreSQL database (with the pgvector extension).
#[derive(Clone)]
pub struct PgMemory {
    pool: Pool,
    limits: Limits,
    /// pgvector 0.8+ keeps a filtered HNSW search going until enough rows pass the filter.
    iterative_scan: bool,
}

impl std::fmt::Debug for PgMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMemory").finish_non_exhaustive()
    }
}

/// Connections one process keeps to the database.
const POOL_SIZE: usize = 16;

impl PgMemory {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// libpq's key=value pairs), creating the schema on first use. TLS follows libpq's
    /// `sslmode` and `sslrootcert` options, always verifying the server's certificate and
    /// name; without `sslmode`, a database on loopback or a Unix socket is reached in the
    /// clear and any other is asked for TLS first.
    pub async fn connect(url: &str, limits: Limits) -> Result<PgMemory, MemoryError> {
        let target = tls::target(url)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.tls {
            Some(tls) => Manager::from_config(target.config, tls, manager_config),
            None => Manager::from_config(target.config, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| MemoryError::Unavailable(format!("postgres: {e}")))?;
        let mut memory = PgMemory {
            pool,
            limits,
            iterative_scan: false,
        };
        let mut client = memory.client().await?;
        memory.iterative_scan = schema::migrate(&mut client).await?;
        Ok(memory)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, MemoryError> {
        self.pool.get().await.map_err(|e| {
            // The cause (which certificate check failed, say) is further down the chain.
            let mut message = format!("postgres: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                message.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            if message.contains("certificate") {
                message.push_str(
                    " (give the server's CA with sslrootcert=/path/ca.pem in the connection \
                     string, or sslmode=disable on a trusted network)",
                );
            }
            MemoryError::Unavailable(message)
        })
    }
}

/// The row `sql` (prepared once per connection) returns, if any.
pub(crate) async fn query_opt_cached(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, MemoryError> {
    let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
    client.query_opt(&statement, params).await.map_err(pg_error)
}

/// A PostgreSQL failure: the service's, not the caller's (callers' mistakes are refused
/// before they reach the database).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> MemoryError {
    match e.as_db_error() {
        Some(db) => MemoryError::Unavailable(format!(
            "postgres: {}{}",
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        )),
        None => MemoryError::Unavailable(format!("postgres: {e}")),
    }
}

impl MemoryApi for PgMemory {
    async fn apply(&self, changes: Vec<Change>) -> MemoryResult<Vec<Outcome>> {
        crate::record::check_batch(&changes, &self.limits)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if changes.iter().any(|c| {
            matches!(
                c,
                Change::Entity { .. }
                    | Change::Relate { .. }
                    | Change::Unrelate { .. }
                    | Change::Merge { .. }
            )
        }) {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&graph::GRAPH_LOCK])
                .await
                .map_err(pg_error)?;
        }
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in &changes {
            outcomes.push(records::apply(&tx, change, &self.limits).await?);
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(outcomes)
    }

    async fn get(&self, id: i64) -> MemoryResult<Record> {
        let client = self.client().await?;
        records::read(&client, id)
            .await?
            .ok_or(MemoryError::NotFound(id))
    }

    async fn get_by_key(&self, store: Store, key: String) -> MemoryResult<Option<Record>> {
        let client = self.client().await?;
        records::read_by_key(&client, store, &key).await
    }

    async fn list(
        &self,
        filter: Filter,
        order: Order,
        limit: usize,
        after: Option<i64>,
    ) -> MemoryResult<Page> {
        filter.check(&self.limits)?;
        crate::record::check_limit(limit)?;
        let client = self.client().await?;
        records::list(&client, &filter, order, limit, after).await
    }

    async fn search(&self, request: SearchRequest) -> MemoryResult<SearchResults> {
        let plan = request.plan(&self.limits)?;
        let mut client = self.client().await?;
        search::search(&mut client, &request, &plan, self.iterative_scan).await
    }

    async fn stats(&self) -> MemoryResult<Stats> {
        let client = self.client().await?;
        records::stats(&client).await
    }

    async fn entity(&self, reference: EntityRef) -> MemoryResult<Entity> {
        let client = self.client().await?;
        let id = graph::resolve(&client, &reference).await?;
        graph::read_entity(&client, id)
            .await?
            .ok_or_else(|| MemoryError::EntityNotFound(reference.to_string()))
    }

    async fn relation(&self, id: i64) -> MemoryResult<Relation> {
        let client = self.client().await?;
        graph::read_relation(&client, id)
            .await?
            .ok_or(MemoryError::RelationNotFound(id))
    }

    async fn neighbourhood(
        &self,
        start: EntityRef,
        hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Neighbourhood> {
        let client = self.client().await?;
        walk::neighbourhood(&mut graph::PgGraph(&client), &start, hops, &options).await
    }

    async fn shortest_path(
        &self,
        from: EntityRef,
        to: EntityRef,
        max_hops: u32,
        options: WalkOptions,
    ) -> MemoryResult<Option<GraphPath>> {
        let client = self.client().await?;
        walk::shortest_path(&mut graph::PgGraph(&client), &from, &to, max_hops, &options).await
    }

    async fn duplicate_entities(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        let client = self.client().await?;
        graph::duplicates(&client, &options).await
    }

    async fn consolidate(&self, options: ConsolidateOptions) -> MemoryResult<Vec<Merge>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&graph::GRAPH_LOCK])
            .await
            .map_err(pg_error)?;
        // Planned under the lock, so no other writer changes the graph in between.
        let merges = graph::duplicates(&tx, &options).await?;
        for merge in &merges {
            graph::merge(&tx, merge.kept, &merge.merged, &self.limits).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(merges)
    }
}
