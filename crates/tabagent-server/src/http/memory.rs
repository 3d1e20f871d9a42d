//! `/v1/memory`: the seven stores over HTTP — write, read, list, delete, search (keyword,
//! vector or hybrid), atomic groups of changes, and statistics.
//!
//! When `memory.embedding_model` is set, text written or searched without a vector is embedded
//! with that model (its id is the vector space); callers may always send their own `vector`
//! and `space`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tabagent_memory::{
    Change, Embedding, Filter, MemoryApi, MemoryError, Mode, NewRecord, Order, Outcome, Record,
    SearchRequest, Store,
};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::memory_backend::MemoryBackend;
use crate::state::AppState;

/// A record to write.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRequest {
    /// The searchable text.
    pub text: String,
    /// What sort of record (`message`, `fact`, `chunk`...; a default per store).
    pub kind: Option<String>,
    /// Anything else, as a JSON object.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// Labels to filter on.
    pub tags: Option<Vec<String>>,
    /// The conversation it belongs to.
    pub conversation: Option<String>,
    /// Where it came from.
    pub source: Option<String>,
    /// Who said it.
    pub role: Option<String>,
    /// A name unique in the store; writing the same key again replaces the record.
    pub key: Option<String>,
    /// When it happened (ms since the Unix epoch; default now).
    pub created_at: Option<i64>,
    /// Its vector (with `space`), instead of embedding the text.
    pub vector: Option<Vec<f32>>,
    /// The vector's space (required with `vector`).
    pub space: Option<String>,
    /// Embed the text with `memory.embedding_model` (default true when one is set).
    pub embed: Option<bool>,
}

/// A stored record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordObject {
    /// Unique across stores.
    pub id: i64,
    /// `memory.record`.
    pub object: &'static str,
    /// Its store.
    pub store: String,
    /// Its kind.
    pub kind: String,
    /// The text.
    pub text: String,
    /// Anything else.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Labels.
    pub tags: Vec<String>,
    /// Its conversation.
    pub conversation: Option<String>,
    /// Where it came from.
    pub source: Option<String>,
    /// Who said it.
    pub role: Option<String>,
    /// Its key.
    pub key: Option<String>,
    /// The vector space it has a vector in.
    pub space: Option<String>,
    /// ms since the Unix epoch.
    pub created_at: i64,
}

impl From<Record> for RecordObject {
    fn from(r: Record) -> Self {
        Self {
            id: r.id,
            object: "memory.record",
            store: r.store.name().to_string(),
            kind: r.kind,
            text: r.text,
            data: r.data,
            tags: r.tags,
            conversation: r.conversation,
            source: r.source,
            role: r.role,
            key: r.key,
            space: r.space,
            created_at: r.created_at,
        }
    }
}

/// A page of records.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordList {
    /// `list`.
    pub object: &'static str,
    /// The records.
    pub data: Vec<RecordObject>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<i64>,
}

/// `POST /v1/memory/search` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// Words to search for (and to embed when an embedding model is set).
    pub query: Option<String>,
    /// A vector to search near, with `space`.
    pub vector: Option<Vec<f32>>,
    /// The vector's space.
    pub space: Option<String>,
    /// `hybrid` (default), `vector` or `keyword`.
    pub mode: Option<String>,
    /// Only these stores.
    pub stores: Option<Vec<String>>,
    /// Only these kinds.
    pub kinds: Option<Vec<String>>,
    /// Records carrying all these tags.
    pub tags: Option<Vec<String>>,
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this role.
    pub role: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
    /// Results (default 10, at most 1000).
    pub limit: Option<usize>,
    /// Results skipped.
    pub offset: Option<usize>,
}

/// Why a record matched.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhyObject {
    /// Place in the vector list (1-based).
    pub vector_rank: Option<usize>,
    /// Cosine similarity (or Euclidean distance) to the query vector.
    pub vector_score: Option<f32>,
    /// Place in the keyword list (1-based).
    pub keyword_rank: Option<usize>,
    /// BM25 score (higher is better).
    pub keyword_score: Option<f64>,
    /// Reciprocal-rank-fusion score.
    pub fused_score: f64,
    /// For a record the memory kept because it was surprising (a conversation turn, an agent
    /// run's lesson): its score, and its strength now that time has passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub surprise: Option<crate::surprise::WhySurprise>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HitObject {
    /// The record.
    pub record: RecordObject,
    /// Why it matched.
    pub why: WhyObject,
    /// For a passage of a document: the document, page and character range it appears at (every
    /// one, when documents share it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<tabagent_librarian::Source>,
}

/// Search results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchResponse {
    /// `list`.
    pub object: &'static str,
    /// Best first.
    pub data: Vec<HitObject>,
    /// `hnsw` or `exact` when a vector list was used.
    pub vector_method: Option<&'static str>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Write a record.
    Insert {
        /// Its store.
        store: String,
        /// The record.
        #[schema(value_type = RecordRequest)]
        record: Box<RecordRequest>,
    },
    /// Delete a record.
    Delete {
        /// The record.
        id: i64,
    },
    /// Create a graph entity or fold it into the one with its name.
    Entity {
        /// The entity.
        #[schema(value_type = super::graph::EntityBody)]
        entity: Box<super::graph::EntityBody>,
    },
    /// Record a relation.
    Relate {
        /// The relation.
        #[schema(value_type = super::graph::RelationBody)]
        relation: Box<super::graph::RelationBody>,
    },
    /// Delete a relation.
    Unrelate {
        /// The relation.
        id: i64,
    },
    /// Fold entities into another.
    Merge {
        /// The entity that remains.
        kept: i64,
        /// Those folded into it.
        merged: Vec<i64>,
    },
}

/// `POST /v1/memory/transaction` body: all operations happen, or none.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionBody {
    /// The operations, in order.
    pub operations: Vec<Operation>,
}

/// What each operation did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransactionResponse {
    /// Inserted records (by position) and deleted ids.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Value>,
}

pub(super) fn memory(state: &AppState) -> Result<MemoryBackend, ApiError> {
    state.memory().cloned().ok_or_else(|| {
        ApiError::unavailable(
            "memory_disabled",
            "the memory is off (`memory.enabled = false`)",
        )
    })
}

fn store(name: &str) -> Result<Store, ApiError> {
    Store::parse(name).map_err(|e| ApiError::not_found("store_not_found", "store", e.to_string()))
}

/// Turns requests into records, embedding the texts that need it in one batch.
async fn records(
    state: &AppState,
    requests: Vec<RecordRequest>,
) -> Result<Vec<NewRecord>, ApiError> {
    let mut wanted = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match (&r.vector, &r.space) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    Some("vector"),
                    "`vector` and `space` go together",
                ))
            }
            (Some(_), Some(_)) => {}
            (None, None) if r.embed.unwrap_or(true) && !r.text.trim().is_empty() => wanted.push(i),
            (None, None) => {}
        }
    }
    let texts = wanted.iter().map(|&i| requests[i].text.clone()).collect();
    let mut embedded: Vec<Option<Embedding>> = vec![None; requests.len()];
    if let Some((space, vectors)) = crate::embedding::for_memory(state, texts).await? {
        for (i, vector) in wanted.into_iter().zip(vectors) {
            embedded[i] = Some(Embedding {
                space: space.clone(),
                vector,
            });
        }
    }
    Ok(requests
        .into_iter()
        .zip(embedded)
        .map(|(r, embedded)| NewRecord {
            kind: r.kind,
            text: r.text,
            data: r.data.unwrap_or(Value::Null),
            tags: r.tags.unwrap_or_default(),
            conversation: r.conversation,
            source: r.source,
            role: r.role,
            key: r.key,
            created_at: r.created_at,
            embedding: match (r.vector, r.space) {
                (Some(vector), Some(space)) => Some(Embedding { space, vector }),
                _ => embedded,
            },
        })
        .collect())
}

/// Write a record.
#[utoipa::path(
    post,
    path = "/v1/memory/{store}",
    tag = "memory",
    params(("store" = String, Path, description = "conversations, knowledge, embeddings, tool-results, experience, summaries or meta")),
    request_body = RecordRequest,
    responses((status = 201, body = RecordObject), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RecordRequest>,
) -> Result<(StatusCode, Json<RecordObject>), ApiError> {
    let store = store(&name)?;
    let memory = memory(&state)?;
    let mut new = records(&state, vec![request]).await?;
    let record = new
        .pop()
        .ok_or_else(|| ApiError::internal("no record built"))?;
    let stored = memory.insert(store, record).await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// List a store's records, newest first (or `order=oldest`), a page at a time.
#[utoipa::path(
    get,
    path = "/v1/memory/{store}",
    tag = "memory",
    params(
        ("store" = String, Path, description = "The store"),
        ("kind" = Option<String>, Query, description = "Only this kind"),
        ("tag" = Option<String>, Query, description = "Only records with this tag (repeatable)"),
        ("conversation" = Option<String>, Query, description = "Only this conversation"),
        ("source" = Option<String>, Query, description = "Only this source"),
        ("role" = Option<String>, Query, description = "Only this role"),
        ("since" = Option<i64>, Query, description = "Created at or after (ms)"),
        ("until" = Option<i64>, Query, description = "Created before (ms)"),
        ("order" = Option<String>, Query, description = "newest (default) or oldest"),
        ("limit" = Option<usize>, Query, description = "Page size (default 50, at most 1000)"),
        ("after" = Option<i64>, Query, description = "The previous page's `next`"),
    ),
    responses((status = 200, body = RecordList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<RecordList>, ApiError> {
    let store = store(&name)?;
    let memory = memory(&state)?;
    let mut filter = Filter {
        stores: vec![store],
        ..Default::default()
    };
    let (mut order, mut limit, mut after) = (Order::Newest, 50usize, None);
    let number = |key: &str, value: &str| -> Result<i64, ApiError> {
        value.parse().map_err(|_| {
            ApiError::bad_request(
                Some(key),
                format!("`{key}` must be an integer, not `{value}`"),
            )
        })
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "kind" => filter.kinds.push(value),
            "tag" => filter.tags.push(value),
            "conversation" => filter.conversation = Some(value),
            "source" => filter.source = Some(value),
            "role" => filter.role = Some(value),
            "since" => filter.since = Some(number("since", &value)?),
            "until" => filter.until = Some(number("until", &value)?),
            "after" => after = Some(number("after", &value)?),
            "limit" => limit = number("limit", &value)?.max(0) as usize,
            "order" => {
                order = match value.as_str() {
                    "newest" => Order::Newest,
                    "oldest" => Order::Oldest,
                    _ => {
                        return Err(ApiError::bad_request(
                            Some("order"),
                            "`order` is `newest` or `oldest`",
                        ))
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(
                    Some(other),
                    format!("unknown query parameter `{other}`"),
                ))
            }
        }
    }
    let page = memory.list(filter, order, limit, after).await?;
    Ok(Json(RecordList {
        object: "list",
        data: page.records.into_iter().map(Into::into).collect(),
        next: page.next,
    }))
}

/// Read one record.
#[utoipa::path(
    get,
    path = "/v1/memory/{store}/{id}",
    tag = "memory",
    params(("store" = String, Path, description = "The store"), ("id" = i64, Path, description = "The record")),
    responses((status = 200, body = RecordObject), (status = 404, body = ErrorBody))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<RecordObject>, ApiError> {
    let (store, id) = (store(&name)?, record_id(&id)?);
    let memory = memory(&state)?;
    let record = memory.get(id).await?;
    if record.store != store {
        return Err(MemoryError::NotFound(id).into());
    }
    Ok(Json(record.into()))
}

/// Delete one record (and its vector).
#[utoipa::path(
    delete,
    path = "/v1/memory/{store}/{id}",
    tag = "memory",
    params(("store" = String, Path, description = "The store"), ("id" = i64, Path, description = "The record")),
    responses((status = 200, description = "Deleted", body = Object), (status = 404, body = ErrorBody))
)]
pub async fn delete_one(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (store, id) = (store(&name)?, record_id(&id)?);
    let memory = memory(&state)?;
    if memory.get(id).await?.store != store {
        return Err(MemoryError::NotFound(id).into());
    }
    memory.delete(id).await?;
    Ok(Json(
        serde_json::json!({"id": id, "object": "memory.record", "deleted": true}),
    ))
}

fn record_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_request(Some("id"), format!("a record id is an integer, not `{id}`"))
    })
}

/// Search by keyword, vector or both (reciprocal rank fusion); each hit says why it matched.
#[utoipa::path(
    post,
    path = "/v1/memory/search",
    tag = "memory",
    request_body = SearchBody,
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody))
)]
pub async fn search(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Json<SearchResponse>, ApiError> {
    let memory = memory(&state)?;
    let mode = match body.mode.as_deref() {
        None | Some("hybrid") => Mode::Hybrid,
        Some("vector") => Mode::Vector,
        Some("keyword") => Mode::Keyword,
        Some(other) => {
            return Err(ApiError::bad_request(
                Some("mode"),
                format!("`mode` is `hybrid`, `vector` or `keyword`, not `{other}`"),
            ))
        }
    };
    let vector = match (body.vector, body.space) {
        (Some(vector), Some(space)) => Some(Embedding { space, vector }),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                Some("vector"),
                "`vector` and `space` go together",
            ))
        }
    };
    let query = body.query.filter(|q| !q.trim().is_empty());
    let vector = match (vector, &query, mode) {
        (Some(v), _, _) => Some(v),
        (None, Some(q), Mode::Hybrid | Mode::Vector) => {
            crate::embedding::one_for_memory(&state, q).await?
        }
        _ => None,
    };
    let stores = body
        .stores
        .unwrap_or_default()
        .iter()
        .map(|s| Store::parse(s).map_err(ApiError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let request = SearchRequest {
        text: query,
        vector,
        filter: Filter {
            stores,
            kinds: body.kinds.unwrap_or_default(),
            tags: body.tags.unwrap_or_default(),
            conversation: body.conversation,
            source: body.source,
            role: body.role,
            since: body.since,
            until: body.until,
        },
        mode,
        limit: body.limit.unwrap_or(10),
        offset: body.offset.unwrap_or(0),
    };
    let found = memory.search(request).await?;
    let records: Vec<&Record> = found.hits.iter().map(|h| &h.record).collect();
    let mut sources = tabagent_librarian::sources(&memory, &records)
        .await?
        .into_iter();
    let now_ms = tabagent_memory::now_ms();
    let half_life = state.config().memory.surprise.half_life_days;
    Ok(Json(SearchResponse {
        object: "list",
        vector_method: found.vector_method,
        data: found
            .hits
            .into_iter()
            .map(|h| HitObject {
                sources: sources.next().unwrap_or_default(),
                why: WhyObject {
                    vector_rank: h.why.vector_rank,
                    vector_score: h.why.vector_score,
                    keyword_rank: h.why.keyword_rank,
                    keyword_score: h.why.keyword_score,
                    fused_score: h.why.fused_score,
                    surprise: crate::surprise::why(
                        &h.record.data,
                        h.record.created_at,
                        now_ms,
                        half_life,
                    ),
                },
                record: h.record.into(),
            })
            .collect(),
    }))
}

/// A text to score against the memory.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurpriseBody {
    /// The text.
    pub text: String,
    /// The store it is compared with (and kept in): default `knowledge`.
    pub store: Option<String>,
    /// Keep it when it is surprising enough (default false: only measure).
    pub keep: Option<bool>,
    /// The conversation it belongs to, when kept.
    pub conversation: Option<String>,
}

/// How surprising a text is to the memory (the gate conversation turns and agent runs pass
/// through), and, with `keep`, kept when it reaches `memory.surprise.threshold`.
#[utoipa::path(
    post,
    path = "/v1/memory/surprise",
    tag = "memory",
    request_body = SurpriseBody,
    responses((status = 200, body = crate::surprise::Decision), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn surprise(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SurpriseBody>,
) -> Result<Json<crate::surprise::Decision>, ApiError> {
    memory(&state)?;
    let store = store(body.store.as_deref().unwrap_or("knowledge"))?;
    let text = body.text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(Some("text"), "`text` is empty"));
    }
    let target = crate::surprise::Target {
        store,
        kind: "remembered",
        source: body
            .conversation
            .as_ref()
            .map(|c| format!("conversation:{c}")),
        conversation: body.conversation,
    };
    let decision =
        crate::surprise::remember(&state, text, target, body.keep.unwrap_or(false)).await?;
    Ok(Json(decision))
}

/// Apply several writes and deletes, across stores, all or none.
#[utoipa::path(
    post,
    path = "/v1/memory/transaction",
    tag = "memory",
    request_body = TransactionBody,
    responses((status = 200, body = TransactionResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn transaction(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TransactionBody>,
) -> Result<Json<TransactionResponse>, ApiError> {
    let memory = memory(&state)?;
    // Inserts and entities are embedded together; everything keeps its place in the order.
    let mut inserts = Vec::new();
    let mut entities = Vec::new();
    let mut order = Vec::new();
    for op in body.operations {
        order.push(match op {
            Operation::Insert {
                store: name,
                record,
            } => {
                inserts.push((store(&name)?, *record));
                Planned::Insert
            }
            Operation::Entity { entity } => {
                entities.push(super::graph::new_entity(*entity));
                Planned::Entity
            }
            Operation::Delete { id } => Planned::Ready(Box::new(Change::Delete { id })),
            Operation::Relate { relation } => Planned::Ready(Box::new(Change::Relate {
                relation: (*relation).into(),
            })),
            Operation::Unrelate { id } => Planned::Ready(Box::new(Change::Unrelate { id })),
            Operation::Merge { kept, merged } => {
                Planned::Ready(Box::new(Change::Merge { kept, merged }))
            }
        });
    }
    let (stores, requests): (Vec<Store>, Vec<RecordRequest>) = inserts.into_iter().unzip();
    let mut built = stores.into_iter().zip(records(&state, requests).await?);
    let mut entities = super::graph::embedded(&state, entities).await?.into_iter();
    let changes = order
        .into_iter()
        .map(|planned| match planned {
            Planned::Ready(change) => Some(*change),
            Planned::Insert => built
                .next()
                .map(|(store, record)| Change::Insert { store, record }),
            Planned::Entity => entities.next().map(|entity| Change::Entity { entity }),
        })
        .collect::<Option<Vec<Change>>>()
        .ok_or_else(|| ApiError::internal("a transaction lost an operation"))?;
    let outcomes = memory.apply(changes).await?;
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Inserted { record } => serde_json::to_value(RecordObject::from(record)),
            Outcome::Deleted { id } => Ok(serde_json::json!({"id": id, "deleted": true})),
            Outcome::SpaceDefined { space } => Ok(serde_json::json!({"space": space})),
            Outcome::Entity { entity } => serde_json::to_value(entity),
            Outcome::Related { relation } => serde_json::to_value(relation),
            Outcome::Unrelated { id } => {
                Ok(serde_json::json!({"id": id, "object": "memory.relation", "deleted": true}))
            }
            Outcome::Merged { merge } => serde_json::to_value(merge),
        })
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(TransactionResponse { results }))
}

/// An operation waiting for its vectors.
enum Planned {
    Ready(Box<Change>),
    Insert,
    Entity,
}

/// Records per store, vector spaces and the database size.
#[utoipa::path(
    get,
    path = "/v1/memory",
    tag = "memory",
    responses((status = 200, description = "Statistics", body = Object))
)]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let memory = memory(&state)?;
    let stats = memory.stats().await?;
    let mut value = serde_json::to_value(stats).map_err(ApiError::internal)?;
    value["embedding_model"] = serde_json::json!(state.config().memory.embedding_model);
    Ok(Json(value))
}
