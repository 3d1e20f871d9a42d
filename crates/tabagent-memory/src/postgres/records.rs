//! Records in PostgreSQL: the changes of one transaction, point reads, listings, filters and
//! statistics.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{graph, pg_error, query_opt_cached, schema};
use crate::record::{check_width, default_kind, Limits};
use crate::vector::{Metric, SpaceInfo};
use crate::writer::{check_insert, check_metric, check_space};
use crate::{
    now_ms, Change, Durability, Filter, MemoryError, NewRecord, Order, Outcome, Page, Record,
    Stats, Store, StoreStats,
};

/// The columns [`row_to_record`] reads, over `records r`.
pub(crate) const RECORD_COLUMNS: &str = "r.id, r.store, r.kind, r.text, r.data, r.tags, \
     r.conversation, r.source, r.role, r.key, r.created_at, \
     (SELECT s.name FROM vectors v JOIN spaces s ON s.id = v.space_id WHERE v.record_id = r.id)";

pub(crate) fn row_to_record(row: &Row) -> Record {
    let store: String = row.get(1);
    Record {
        id: row.get(0),
        // Only names from `Store::name` are ever written.
        store: Store::parse(&store).unwrap_or(Store::Meta),
        kind: row.get(2),
        text: row.get(3),
        data: row.get(4),
        tags: row.get(5),
        conversation: row.get(6),
        source: row.get(7),
        role: row.get(8),
        key: row.get(9),
        created_at: row.get(10),
        space: row.get(11),
    }
}

/// Query parameters numbered as they are added.
#[derive(Default)]
pub(crate) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds `value`; returns its placeholder.
    pub(crate) fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `filter` as `WHERE` terms over `records r`.
pub(crate) fn filter_sql(filter: &Filter, params: &mut Params) -> String {
    let mut terms = vec!["TRUE".to_string()];
    if !filter.stores.is_empty() {
        let names: Vec<String> = filter.stores.iter().map(|s| s.name().to_string()).collect();
        terms.push(format!("r.store = ANY({})", params.push(names)));
    }
    if !filter.kinds.is_empty() {
        terms.push(format!(
            "r.kind = ANY({})",
            params.push(filter.kinds.clone())
        ));
    }
    for (column, value) in [
        ("conversation", &filter.conversation),
        ("source", &filter.source),
        ("role", &filter.role),
    ] {
        if let Some(v) = value {
            terms.push(format!("r.{column} = {}", params.push(v.clone())));
        }
    }
    if !filter.tags.is_empty() {
        terms.push(format!("r.tags @> {}", params.push(filter.tags.clone())));
    }
    if let Some(since) = filter.since {
        terms.push(format!("r.created_at >= {}", params.push(since)));
    }
    if let Some(until) = filter.until {
        terms.push(format!("r.created_at < {}", params.push(until)));
    }
    terms.join(" AND ")
}

/// PostgreSQL refuses NUL in text and JSON strings; say so as the caller's mistake.
fn check_no_nul(record: &NewRecord) -> Result<(), MemoryError> {
    let labels = [
        ("text", Some(record.text.as_str())),
        ("kind", record.kind.as_deref()),
        ("conversation", record.conversation.as_deref()),
        ("source", record.source.as_deref()),
        ("role", record.role.as_deref()),
        ("key", record.key.as_deref()),
    ];
    let tags = record.tags.iter().map(|t| ("tags", Some(t.as_str())));
    for (param, value) in labels.into_iter().chain(tags) {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(no_nul(param));
        }
    }
    if record.data.to_string().contains("\\u0000") {
        return Err(no_nul("data"));
    }
    Ok(())
}

pub(crate) fn no_nul(param: &'static str) -> MemoryError {
    MemoryError::invalid(
        param,
        format!("{param} contains a NUL character, which PostgreSQL cannot store"),
    )
}

/// Applies one change inside the caller's transaction.
pub(crate) async fn apply(
    tx: &impl GenericClient,
    change: &Change,
    limits: &Limits,
) -> Result<Outcome, MemoryError> {
    match change {
        Change::Insert { store, record } => {
            check_insert(*store, record, limits)?;
            check_no_nul(record)?;
            Ok(Outcome::Inserted {
                record: write_record(tx, *store, record).await?,
            })
        }
        Change::DefineSpace {
            space,
            dimensions,
            metric,
        } => {
            check_space(space, *dimensions, limits)?;
            if space.contains('\0') {
                return Err(no_nul("space"));
            }
            let (_, existing) = ensure_space(tx, space, *dimensions, *metric).await?;
            check_metric(space, existing, *metric)?;
            Ok(Outcome::SpaceDefined {
                space: space.clone(),
            })
        }
        Change::Delete { id } => {
            let deleted = tx
                .execute("DELETE FROM records WHERE id = $1", &[id])
                .await
                .map_err(pg_error)?;
            if deleted == 0 {
                return Err(MemoryError::NotFound(*id));
            }
            Ok(Outcome::Deleted { id: *id })
        }
        Change::Entity { entity } => Ok(Outcome::Entity {
            entity: graph::upsert_entity(tx, entity, limits).await?,
        }),
        Change::Relate { relation } => Ok(Outcome::Related {
            relation: graph::relate(tx, relation, limits).await?,
        }),
        Change::Unrelate { id } => {
            let deleted = tx
                .execute("DELETE FROM relations WHERE id = $1", &[id])
                .await
                .map_err(pg_error)?;
            if deleted == 0 {
                return Err(MemoryError::RelationNotFound(*id));
            }
            Ok(Outcome::Unrelated { id: *id })
        }
        Change::Merge { kept, merged } => Ok(Outcome::Merged {
            merge: graph::merge(tx, *kept, merged, limits).await?,
        }),
    }
}

/// Writes `r` (replacing the record with its key) and returns it as stored.
async fn write_record(
    tx: &impl GenericClient,
    store: Store,
    r: &NewRecord,
) -> Result<Record, MemoryError> {
    let kind = r.kind.as_deref().unwrap_or(default_kind(store));
    let data = if r.data.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        r.data.clone()
    };
    let created_at = r.created_at.unwrap_or_else(now_ms);
    let statement = tx
        .prepare_cached(
            "INSERT INTO records(store, kind, text, data, tags, conversation, source, role, key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (store, key) WHERE key IS NOT NULL DO UPDATE SET kind = EXCLUDED.kind,
                 text = EXCLUDED.text, data = EXCLUDED.data, tags = EXCLUDED.tags,
                 conversation = EXCLUDED.conversation, source = EXCLUDED.source,
                 role = EXCLUDED.role, created_at = EXCLUDED.created_at
             RETURNING id",
        )
        .await
        .map_err(pg_error)?;
    let id: i64 = tx
        .query_one(
            &statement,
            &[
                &store.name(),
                &kind,
                &r.text,
                &data,
                &r.tags,
                &r.conversation,
                &r.source,
                &r.role,
                &r.key,
                &created_at,
            ],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if r.key.is_some() {
        // A replaced record loses the vector it had.
        tx.execute("DELETE FROM vectors WHERE record_id = $1", &[&id])
            .await
            .map_err(pg_error)?;
    }
    if let Some(embedding) = &r.embedding {
        set_vector(tx, id, embedding).await?;
    }
    Ok(Record::written(id, store, kind, data, created_at, r))
}

/// Gives record `id` this vector (in a cosine space created on first use).
pub(crate) async fn set_vector(
    tx: &impl GenericClient,
    id: i64,
    embedding: &crate::Embedding,
) -> Result<(), MemoryError> {
    if embedding.space.contains('\0') {
        return Err(no_nul("space"));
    }
    let (space, _) =
        ensure_space(tx, &embedding.space, embedding.vector.len(), Metric::Cosine).await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO vectors(record_id, space_id, vector) VALUES ($1, $2, $3)
             ON CONFLICT (record_id) DO UPDATE SET space_id = EXCLUDED.space_id, vector = EXCLUDED.vector",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &statement,
        &[
            &id,
            &space,
            &pgvector::Vector::from(embedding.vector.clone()),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The space's id and metric, creating it (and its HNSW index) on first use; a vector of
/// another width is refused.
pub(crate) async fn ensure_space(
    tx: &impl GenericClient,
    name: &str,
    dimensions: usize,
    metric: Metric,
) -> Result<(i32, Metric), MemoryError> {
    let found = match space(tx, name).await? {
        Some(found) => Some(found),
        None => {
            let created = tx
                .query_opt(
                    "INSERT INTO spaces(name, dimensions, metric) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                    &[&name, &(dimensions as i32), &metric.name()],
                )
                .await
                .map_err(pg_error)?;
            match created {
                Some(row) => {
                    let id: i32 = row.get(0);
                    if let Some(sql) = schema::space_index(id, dimensions, metric) {
                        tx.batch_execute(&sql).await.map_err(pg_error)?;
                    }
                    return Ok((id, metric));
                }
                // Another writer created it meanwhile.
                None => space(tx, name).await?,
            }
        }
    };
    let (id, expected, metric) =
        found.ok_or_else(|| MemoryError::Unavailable(format!("space `{name}` vanished")))?;
    check_width(name, expected, dimensions)?;
    Ok((id, metric))
}

/// The space's id, width and metric, if it exists.
pub(crate) async fn space(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<(i32, usize, Metric)>, MemoryError> {
    match query_opt_cached(
        client,
        "SELECT id, dimensions, metric FROM spaces WHERE name = $1",
        &[&name],
    )
    .await?
    {
        Some(row) => {
            let metric: String = row.get(2);
            Ok(Some((
                row.get(0),
                row.get::<_, i32>(1) as usize,
                Metric::parse(&metric)?,
            )))
        }
        None => Ok(None),
    }
}

/// Record `id`, if it exists.
pub(crate) async fn read(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<Record>, MemoryError> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.id = $1");
    Ok(query_opt_cached(client, &sql, &[&id])
        .await?
        .as_ref()
        .map(row_to_record))
}

/// The record with `key` in `store`.
pub(crate) async fn read_by_key(
    client: &impl GenericClient,
    store: Store,
    key: &str,
) -> Result<Option<Record>, MemoryError> {
    if key.contains('\0') {
        return Ok(None);
    }
    let sql = format!("SELECT {RECORD_COLUMNS} FROM records r WHERE r.store = $1 AND r.key = $2");
    Ok(query_opt_cached(client, &sql, &[&store.name(), &key])
        .await?
        .as_ref()
        .map(row_to_record))
}

/// A page of the records `filter` allows, from `after` on.
pub(crate) async fn list(
    client: &impl GenericClient,
    filter: &Filter,
    order: Order,
    limit: usize,
    after: Option<i64>,
) -> Result<Page, MemoryError> {
    let mut params = Params::default();
    let mut clause = filter_sql(filter, &mut params);
    let (cmp, dir) = match order {
        Order::Newest => ("<", "DESC"),
        Order::Oldest => (">", "ASC"),
    };
    if let Some(after) = after {
        if read(client, after).await?.is_none() {
            return Err(MemoryError::invalid(
                "after",
                format!("no record {after} to continue from"),
            ));
        }
        // The cursor is a record id; pages continue from its (created_at, id).
        let mark = params.push(after);
        clause.push_str(&format!(
            " AND (r.created_at, r.id) {cmp} (SELECT created_at, id FROM records WHERE id = {mark})"
        ));
    }
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records r WHERE {clause}
         ORDER BY r.created_at {dir}, r.id {dir} LIMIT {}",
        limit + 1
    );
    let records: Vec<Record> = client
        .query(&sql, &params.refs())
        .await
        .map_err(pg_error)?
        .iter()
        .map(row_to_record)
        .collect();
    Ok(Page::cut(records, limit))
}

/// What the database holds.
pub(crate) async fn stats(client: &impl GenericClient) -> Result<Stats, MemoryError> {
    let mut counts: std::collections::HashMap<String, (u64, u64)> = client
        .query(
            "SELECT r.store, count(*), count(v.record_id) FROM records r
             LEFT JOIN vectors v ON v.record_id = r.id GROUP BY r.store",
            &[],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64),
            )
        })
        .collect();
    let stores = StoreStats::all(&mut counts);
    let mut spaces = Vec::new();
    for row in client
        .query(
            "SELECT s.name, s.dimensions, s.metric, count(v.record_id) FROM spaces s
             LEFT JOIN vectors v ON v.space_id = s.id GROUP BY s.id ORDER BY s.name",
            &[],
        )
        .await
        .map_err(pg_error)?
    {
        spaces.push(SpaceInfo {
            name: row.get(0),
            dimensions: row.get::<_, i32>(1) as usize,
            metric: Metric::parse(row.get(2))?,
            indexed: row.get::<_, i64>(3) as usize,
        });
    }
    let row = client
        .query_one(
            "SELECT pg_database_size(current_database()), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let synchronous: String = row.get(1);
    Ok(Stats {
        stores,
        spaces,
        bytes: row.get::<_, i64>(0) as u64,
        durability: if synchronous == "off" {
            Durability::Normal
        } else {
            Durability::Full
        },
    })
}
