//! `/v1/memory/graph`: the knowledge graph over HTTP — entities, relations, neighbourhoods,
//! shortest paths, merging and consolidating duplicates, and extracting entities and relations
//! from text with the language model under a JSON-schema grammar.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tabagent_core::{ChatMessage, FinishReason, Role};
use tabagent_memory::{
    Change, ConsolidateOptions, Direction, Embedding, Entity, EntityRef, MemoryApi, Merge,
    NewEntity, NewRecord, NewRelation, Outcome, Relation, Store, WalkOptions,
};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::memory::memory;
use crate::embedding::for_memory as embed;
use crate::generation::tasks as llm_task;
use crate::state::AppState;

/// An entity to create, or to fold into the one that has its name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityBody {
    /// Its name (compared without case or extra spaces).
    pub name: String,
    /// What it is (`person`, `place`...).
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// A sentence about it.
    pub description: Option<String>,
    /// Other names it goes by.
    pub aliases: Option<Vec<String>>,
    /// Where it was seen.
    pub source: Option<String>,
}

/// A relation to record. Ends are entity ids or names; a new name creates an entity.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationBody {
    /// Where it starts: an entity id or name.
    #[schema(value_type = EntityRefSchema)]
    pub subject: EntityRef,
    /// Its type (`works_for`); stored lowercase with `_`.
    pub relation: String,
    /// Where it ends: an entity id or name.
    #[schema(value_type = EntityRefSchema)]
    pub object: EntityRef,
    /// The record (message, passage) it was read from.
    pub evidence: Option<i64>,
    /// Where it came from, when not a record.
    pub source: Option<String>,
    /// How sure, 0 to 1.
    pub confidence: Option<f32>,
}

impl From<RelationBody> for NewRelation {
    fn from(b: RelationBody) -> Self {
        NewRelation {
            subject: b.subject,
            relation: b.relation,
            object: b.object,
            evidence: b.evidence,
            source: b.source,
            confidence: b.confidence,
        }
    }
}

/// An entity by its record id or one of its names (the documented form of [`EntityRef`]).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EntityRefSchema {
    Id(i64),
    Name(String),
}

/// What a walk may follow (the fields both walks take).
fn walk_options(
    relations: Option<Vec<String>>,
    direction: Option<Direction>,
    max_entities: Option<usize>,
) -> WalkOptions {
    let default = WalkOptions::default();
    WalkOptions {
        relations: relations.unwrap_or_default(),
        direction: direction.unwrap_or_default(),
        max_entities: max_entities.unwrap_or(default.max_entities),
    }
}

/// `POST /v1/memory/graph/neighbourhood` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NeighbourhoodBody {
    /// The entity at the centre: an id or a name.
    #[schema(value_type = EntityRefSchema)]
    pub entity: EntityRef,
    /// Hops out (default 1, at most 6).
    pub hops: Option<u32>,
    /// Only these relation types.
    pub relations: Option<Vec<String>>,
    /// `out`, `in` or `both` (default).
    #[schema(value_type = Option<String>)]
    pub direction: Option<Direction>,
    /// Entities the walk may reach (default 1000).
    pub max_entities: Option<usize>,
}

/// `POST /v1/memory/graph/path` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    /// The start: an entity id or name.
    #[schema(value_type = EntityRefSchema)]
    pub from: EntityRef,
    /// The end.
    #[schema(value_type = EntityRefSchema)]
    pub to: EntityRef,
    /// Most relations on the path (default 6, at most 12).
    pub max_hops: Option<u32>,
    /// Only these relation types.
    pub relations: Option<Vec<String>>,
    /// `out`, `in` or `both` (default).
    #[schema(value_type = Option<String>)]
    pub direction: Option<Direction>,
    /// Entities the walk may reach (default 1000).
    pub max_entities: Option<usize>,
}

/// A path, when one exists.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathResponse {
    /// Whether a path was found within `max_hops`.
    pub found: bool,
    /// From the start to the end.
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<Entity>,
    /// `relations[i]` joins `entities[i]` and `entities[i + 1]`.
    #[schema(value_type = Vec<Object>)]
    pub relations: Vec<Relation>,
}

/// `POST /v1/memory/graph/merge` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The entity that remains.
    pub kept: i64,
    /// Those folded into it.
    pub merged: Vec<i64>,
}

/// `POST /v1/memory/graph/consolidate` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsolidateBody {
    /// Also merge entities whose vectors are at least this cosine-similar.
    pub similarity: Option<f32>,
    /// Report the merges without making them.
    pub dry_run: Option<bool>,
}

/// The merges made (or, with `dry_run`, that would be).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsolidateResponse {
    /// Whether they were made.
    pub applied: bool,
    /// Each group: the entity kept and those folded into it.
    #[schema(value_type = Vec<Object>)]
    pub merges: Vec<Merge>,
}

/// `POST /v1/memory/graph/extract` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractBody {
    /// The text to read.
    pub text: String,
    /// The language model (default `memory.llm`, else the default model).
    pub model: Option<String>,
    /// The record the text is, to cite; without one the text is stored as a `passage` in the
    /// knowledge store and cited.
    pub evidence: Option<i64>,
    /// Where the text came from.
    pub source: Option<String>,
    /// Store what was found (default true); false only reports it.
    pub save: Option<bool>,
    /// Most tokens the model may write (default 768, at most 4096).
    pub max_tokens: Option<u32>,
}

/// What the model found, as it named it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Extracted {
    /// The entities, with types.
    pub entities: Vec<ExtractedEntity>,
    /// The relations between them.
    pub relations: Vec<ExtractedRelation>,
}

/// An entity as the model named it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ExtractedEntity {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub entity_type: String,
}

/// A relation as the model named it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ExtractedRelation {
    /// Subject's name.
    pub subject: String,
    /// The relation.
    pub relation: String,
    /// Object's name.
    pub object: String,
}

/// The extraction, and what was stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExtractResponse {
    /// The model's answer.
    pub extracted: Extracted,
    /// The record cited as evidence (absent when nothing was saved).
    pub evidence: Option<i64>,
    /// Entities as stored.
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<Entity>,
    /// Relations as stored.
    #[schema(value_type = Vec<Object>)]
    pub relations: Vec<Relation>,
    /// The model used.
    pub model: String,
}

/// Longest text extraction accepts, in bytes.
const MAX_EXTRACT_BYTES: usize = 32 * 1024;

/// Embeds each entity's name and description when `memory.embedding_model` is set.
pub async fn embedded(
    state: &AppState,
    mut entities: Vec<NewEntity>,
) -> Result<Vec<NewEntity>, ApiError> {
    let texts = entities
        .iter()
        .map(|e| match &e.description {
            Some(d) => format!("{}: {d}", e.name),
            None => e.name.clone(),
        })
        .collect();
    if let Some((space, vectors)) = embed(state, texts).await? {
        for (entity, vector) in entities.iter_mut().zip(vectors) {
            entity.embedding = Some(Embedding {
                space: space.clone(),
                vector,
            });
        }
    }
    Ok(entities)
}

pub(super) fn new_entity(b: EntityBody) -> NewEntity {
    NewEntity {
        name: b.name,
        entity_type: b.entity_type,
        description: b.description,
        aliases: b.aliases.unwrap_or_default(),
        source: b.source,
        embedding: None,
    }
}

/// Create an entity, or fold it into the one with its name (aliases accumulate).
#[utoipa::path(
    post,
    path = "/v1/memory/graph/entities",
    tag = "memory",
    request_body = EntityBody,
    responses((status = 200, description = "The entity as stored", body = Object), (status = 400, body = ErrorBody))
)]
pub async fn upsert_entity(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EntityBody>,
) -> Result<Json<Entity>, ApiError> {
    let memory = memory(&state)?;
    let entity = embedded(&state, vec![new_entity(body)])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("no entity built"))?;
    Ok(Json(memory.upsert_entity(entity).await?))
}

fn entity_ref(text: &str) -> EntityRef {
    text.parse()
        .map_or_else(|_| EntityRef::Name(text.to_string()), EntityRef::Id)
}

/// Read an entity by id or by one of its names.
#[utoipa::path(
    get,
    path = "/v1/memory/graph/entities/{entity}",
    tag = "memory",
    params(("entity" = String, Path, description = "An entity id, or one of its names (URL-encoded)")),
    responses((status = 200, description = "The entity", body = Object), (status = 404, body = ErrorBody))
)]
pub async fn get_entity(
    State(state): State<AppState>,
    Path(entity): Path<String>,
) -> Result<Json<Entity>, ApiError> {
    let memory = memory(&state)?;
    let reference = entity_ref(&entity);
    Ok(Json(memory.entity(reference).await?))
}

/// Record a relation between two entities, citing its evidence.
#[utoipa::path(
    post,
    path = "/v1/memory/graph/relations",
    tag = "memory",
    request_body = RelationBody,
    responses((status = 200, description = "The relation as stored", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn relate(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RelationBody>,
) -> Result<Json<Relation>, ApiError> {
    let memory = memory(&state)?;
    let relation = NewRelation::from(body);
    Ok(Json(memory.relate(relation).await?))
}

fn relation_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_request(
            Some("id"),
            format!("a relation id is an integer, not `{id}`"),
        )
    })
}

/// Read a relation.
#[utoipa::path(
    get,
    path = "/v1/memory/graph/relations/{id}",
    tag = "memory",
    params(("id" = i64, Path, description = "The relation")),
    responses((status = 200, description = "The relation", body = Object), (status = 404, body = ErrorBody))
)]
pub async fn get_relation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Relation>, ApiError> {
    let (memory, id) = (memory(&state)?, relation_id(&id)?);
    Ok(Json(memory.relation(id).await?))
}

/// Delete a relation.
#[utoipa::path(
    delete,
    path = "/v1/memory/graph/relations/{id}",
    tag = "memory",
    params(("id" = i64, Path, description = "The relation")),
    responses((status = 200, description = "Deleted", body = Object), (status = 404, body = ErrorBody))
)]
pub async fn delete_relation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (memory, id) = (memory(&state)?, relation_id(&id)?);
    memory.apply(vec![Change::Unrelate { id }]).await?;
    Ok(Json(
        serde_json::json!({"id": id, "object": "memory.relation", "deleted": true}),
    ))
}

/// The entities within k hops of one, and the relations among them.
#[utoipa::path(
    post,
    path = "/v1/memory/graph/neighbourhood",
    tag = "memory",
    request_body = NeighbourhoodBody,
    responses((status = 200, description = "`entities` (each with `hops`), `relations`, `truncated`", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn neighbourhood(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NeighbourhoodBody>,
) -> Result<Json<tabagent_memory::Neighbourhood>, ApiError> {
    let memory = memory(&state)?;
    let options = walk_options(body.relations, body.direction, body.max_entities);
    let hops = body.hops.unwrap_or(1);
    Ok(Json(
        memory.neighbourhood(body.entity, hops, options).await?,
    ))
}

/// The shortest path between two entities.
#[utoipa::path(
    post,
    path = "/v1/memory/graph/path",
    tag = "memory",
    request_body = PathBody,
    responses((status = 200, body = PathResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn path(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PathBody>,
) -> Result<Json<PathResponse>, ApiError> {
    let memory = memory(&state)?;
    let options = walk_options(body.relations, body.direction, body.max_entities);
    let max_hops = body.max_hops.unwrap_or(6);
    let found = memory
        .shortest_path(body.from, body.to, max_hops, options)
        .await?;
    Ok(Json(match found {
        Some(p) => PathResponse {
            found: true,
            entities: p.entities,
            relations: p.relations,
        },
        None => PathResponse {
            found: false,
            entities: Vec::new(),
            relations: Vec::new(),
        },
    }))
}

/// Fold entities into another: relations move, names become aliases.
#[utoipa::path(
    post,
    path = "/v1/memory/graph/merge",
    tag = "memory",
    request_body = MergeBody,
    responses((status = 200, description = "The entity that remains", body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn merge(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MergeBody>,
) -> Result<Json<Entity>, ApiError> {
    let memory = memory(&state)?;
    let kept = body.kept;
    memory
        .apply(vec![Change::Merge {
            kept,
            merged: body.merged,
        }])
        .await?;
    Ok(Json(memory.entity(EntityRef::Id(kept)).await?))
}

/// Find and merge duplicate entities (same loose name or alias, same type; optionally close
/// vectors).
#[utoipa::path(
    post,
    path = "/v1/memory/graph/consolidate",
    tag = "memory",
    request_body = ConsolidateBody,
    responses((status = 200, body = ConsolidateResponse), (status = 400, body = ErrorBody))
)]
pub async fn consolidate(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ConsolidateBody>,
) -> Result<Json<ConsolidateResponse>, ApiError> {
    let memory = memory(&state)?;
    let options = ConsolidateOptions {
        similarity: body.similarity,
    };
    let dry_run = body.dry_run.unwrap_or(false);
    let merges = if dry_run {
        memory.duplicate_entities(options).await?
    } else {
        memory.consolidate(options).await?
    };
    Ok(Json(ConsolidateResponse {
        applied: !dry_run,
        merges,
    }))
}

/// The shape the model must answer in.
fn extraction_schema() -> Value {
    let name = serde_json::json!({"type": "string", "minLength": 1, "maxLength": 80});
    let label = serde_json::json!({"type": "string", "minLength": 1, "maxLength": 40});
    serde_json::json!({
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "maxItems": 24,
                "items": {
                    "type": "object",
                    "properties": {"name": name, "type": label},
                    "required": ["name", "type"],
                    "additionalProperties": false
                }
            },
            "relations": {
                "type": "array",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "properties": {"subject": name, "relation": label, "object": name},
                    "required": ["subject", "relation", "object"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["entities", "relations"],
        "additionalProperties": false
    })
}

const EXTRACTION_PROMPT: &str = "You build a knowledge graph from text. List the named entities \
in the user's text (people, places, organizations, works, products, concepts), each with a \
one-word type, and the relations the text states between them as subject, relation, object, \
using the entities' names and a short relation such as works_for, located_in or created. \
Use only what the text says. Answer with JSON only.";

/// Read entities and relations from text with the language model (its output held to a JSON
/// schema by a grammar) and store them, citing the text.
#[utoipa::path(
    post,
    path = "/v1/memory/graph/extract",
    tag = "memory",
    request_body = ExtractBody,
    responses((status = 200, body = ExtractResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "The model's answer was cut off at `max_tokens`", body = ErrorBody), (status = 503, body = ErrorBody))
)]
pub async fn extract(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ExtractBody>,
) -> Result<Json<ExtractResponse>, ApiError> {
    let memory = memory(&state)?;
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request(Some("text"), "`text` is empty"));
    }
    if body.text.len() > MAX_EXTRACT_BYTES {
        return Err(ApiError::bad_request(
            Some("text"),
            format!("`text` is at most {MAX_EXTRACT_BYTES} bytes; split longer documents"),
        ));
    }
    let max_tokens = body.max_tokens.unwrap_or(768);
    if !(1..=4096).contains(&max_tokens) {
        return Err(ApiError::bad_request(
            Some("max_tokens"),
            "`max_tokens` is 1 to 4096",
        ));
    }
    if let Some(evidence) = body.evidence {
        memory.get(evidence).await.map_err(|_| {
            ApiError::bad_request(Some("evidence"), format!("no record {evidence} to cite"))
        })?;
    }
    let model = llm_task::model(&state, body.model);
    let messages = vec![
        ChatMessage::new(Role::System, EXTRACTION_PROMPT),
        ChatMessage::new(Role::User, body.text.clone()),
    ];
    let out = llm_task::run(
        &state,
        &model,
        messages,
        Some(extraction_schema()),
        max_tokens,
    )
    .await?;
    if out.reason == FinishReason::Length {
        // The request was sound, the model could not finish it in `max_tokens`: the caller
        // can act on that (more tokens, less text), so it is theirs to see as a 4xx.
        return Err(ApiError::unprocessable(
            "extraction_incomplete",
            format!("the model's answer was cut off at {max_tokens} tokens; raise `max_tokens` or send less text"),
        ));
    }
    let extracted: Extracted = serde_json::from_str(&out.text).map_err(|e| {
        ApiError::internal(format!(
            "the grammar let through an answer that is not the schema: {e}"
        ))
    })?;
    if !body.save.unwrap_or(true) {
        return Ok(Json(ExtractResponse {
            extracted,
            evidence: None,
            entities: Vec::new(),
            relations: Vec::new(),
            model,
        }));
    }
    let evidence = match body.evidence {
        Some(id) => id,
        None => {
            let passage = NewRecord {
                kind: Some("passage".to_string()),
                text: body.text.clone(),
                source: body.source.clone(),
                ..Default::default()
            };
            let records = crate::embedding::records(&state, vec![passage]).await?;
            let mut inserted = memory
                .apply(
                    records
                        .into_iter()
                        .map(|record| Change::Insert {
                            store: Store::Knowledge,
                            record,
                        })
                        .collect(),
                )
                .await?;
            match inserted.pop() {
                Some(Outcome::Inserted { record }) => record.id,
                _ => return Err(ApiError::internal("the passage was not stored")),
            }
        }
    };
    let entities = extracted
        .entities
        .iter()
        .map(|e| NewEntity {
            name: e.name.clone(),
            entity_type: Some(e.entity_type.clone()),
            source: body.source.clone(),
            ..Default::default()
        })
        .filter(|e| !e.name.trim().is_empty())
        .collect();
    let mut changes: Vec<Change> = embedded(&state, entities)
        .await?
        .into_iter()
        .map(|entity| Change::Entity { entity })
        .collect();
    changes.extend(
        extracted
            .relations
            .iter()
            .filter(|r| {
                !(r.subject.trim().is_empty()
                    || r.object.trim().is_empty()
                    || tabagent_memory::graph::relation_type(&r.relation).is_empty())
            })
            .map(|r| Change::Relate {
                relation: NewRelation {
                    subject: EntityRef::Name(r.subject.clone()),
                    relation: r.relation.clone(),
                    object: EntityRef::Name(r.object.clone()),
                    evidence: Some(evidence),
                    source: body.source.clone(),
                    confidence: None,
                },
            }),
    );
    let (mut entities, mut relations) = (Vec::new(), Vec::new());
    if !changes.is_empty() {
        for outcome in memory.apply(changes).await? {
            match outcome {
                Outcome::Entity { entity } => entities.push(entity),
                Outcome::Related { relation } => relations.push(relation),
                _ => {}
            }
        }
    }
    entities.sort_by_key(|e| e.id);
    entities.dedup_by_key(|e| e.id);
    Ok(Json(ExtractResponse {
        extracted,
        evidence: Some(evidence),
        entities,
        relations,
        model,
    }))
}
