//! Between the protobuf messages and tabagent-memory's types, both ways, and between
//! `MemoryError` and gRPC statuses. Conversions from the wire check what protobuf cannot
//! (store names, metrics, modes, required messages) and fail as the embedded store would.

use tabagent_memory as m;
use tabagent_memory::MemoryError;
use tonic::{Code, Status};

use crate::pb;

fn invalid(param: &'static str, message: impl Into<String>) -> MemoryError {
    MemoryError::Invalid {
        param,
        message: message.into(),
    }
}

fn data_from_json(text: &str) -> Result<serde_json::Value, MemoryError> {
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| invalid("data", format!("data is not JSON: {e}")))
}

fn data_to_json(value: &serde_json::Value) -> String {
    if value.is_null() {
        String::new()
    } else {
        value.to_string()
    }
}

// ---- wire → domain -------------------------------------------------------------------------

pub fn embedding(e: pb::Embedding) -> m::Embedding {
    m::Embedding {
        space: e.space,
        vector: e.vector,
    }
}

pub fn new_record(r: pb::NewRecord) -> Result<m::NewRecord, MemoryError> {
    Ok(m::NewRecord {
        kind: r.kind,
        text: r.text,
        data: data_from_json(&r.data_json)?,
        tags: r.tags,
        conversation: r.conversation,
        source: r.source,
        role: r.role,
        key: r.key,
        embedding: r.embedding.map(embedding),
        created_at: r.created_at,
    })
}

pub fn record(r: pb::Record) -> Result<m::Record, MemoryError> {
    Ok(m::Record {
        id: r.id,
        store: m::Store::parse(&r.store)?,
        kind: r.kind,
        text: r.text,
        data: data_from_json(&r.data_json)?,
        tags: r.tags,
        conversation: r.conversation,
        source: r.source,
        role: r.role,
        key: r.key,
        space: r.space,
        created_at: r.created_at,
    })
}

pub fn entity_ref(
    r: Option<pb::EntityRef>,
    param: &'static str,
) -> Result<m::EntityRef, MemoryError> {
    match r.and_then(|r| r.by) {
        Some(pb::entity_ref::By::Id(id)) => Ok(m::EntityRef::Id(id)),
        Some(pb::entity_ref::By::Name(name)) => Ok(m::EntityRef::Name(name)),
        None => Err(invalid(param, format!("`{param}` names no entity"))),
    }
}

pub fn new_entity(e: pb::NewEntity) -> m::NewEntity {
    m::NewEntity {
        name: e.name,
        entity_type: e.r#type,
        description: e.description,
        aliases: e.aliases,
        source: e.source,
        embedding: e.embedding.map(embedding),
    }
}

pub fn entity(e: pb::Entity) -> m::Entity {
    m::Entity {
        id: e.id,
        name: e.name,
        entity_type: e.r#type,
        description: e.description,
        aliases: e.aliases,
        source: e.source,
        created_at: e.created_at,
    }
}

pub fn new_relation(r: pb::NewRelation) -> Result<m::NewRelation, MemoryError> {
    Ok(m::NewRelation {
        subject: entity_ref(r.subject, "subject")?,
        relation: r.relation,
        object: entity_ref(r.object, "object")?,
        evidence: r.evidence,
        source: r.source,
        confidence: r.confidence,
    })
}

pub fn relation(r: pb::Relation) -> m::Relation {
    m::Relation {
        id: r.id,
        subject: r.subject,
        relation: r.relation,
        object: r.object,
        evidence: r.evidence,
        source: r.source,
        confidence: r.confidence,
        created_at: r.created_at,
    }
}

fn metric(name: &str) -> Result<m::Metric, MemoryError> {
    match name {
        "" | "cosine" => Ok(m::Metric::Cosine),
        "euclidean" => Ok(m::Metric::Euclidean),
        other => Err(invalid("metric", format!("unknown metric `{other}`"))),
    }
}

pub fn change(c: pb::Change) -> Result<m::Change, MemoryError> {
    use pb::change::Change as C;
    Ok(match c.change {
        Some(C::Insert(i)) => m::Change::Insert {
            store: m::Store::parse(&i.store)?,
            record: new_record(i.record.unwrap_or_default())?,
        },
        Some(C::DefineSpace(d)) => m::Change::DefineSpace {
            space: d.space,
            dimensions: d.dimensions as usize,
            metric: metric(&d.metric)?,
        },
        Some(C::Delete(id)) => m::Change::Delete { id },
        Some(C::Entity(e)) => m::Change::Entity {
            entity: new_entity(e),
        },
        Some(C::Relate(r)) => m::Change::Relate {
            relation: new_relation(r)?,
        },
        Some(C::Unrelate(id)) => m::Change::Unrelate { id },
        Some(C::Merge(g)) => m::Change::Merge {
            kept: g.kept,
            merged: g.merged,
        },
        None => return Err(invalid("operations", "a change with no operation")),
    })
}

pub fn outcome(o: pb::Outcome) -> Result<m::Outcome, MemoryError> {
    use pb::outcome::Outcome as O;
    Ok(match o.outcome {
        Some(O::Inserted(r)) => m::Outcome::Inserted { record: record(r)? },
        Some(O::SpaceDefined(space)) => m::Outcome::SpaceDefined { space },
        Some(O::Deleted(id)) => m::Outcome::Deleted { id },
        Some(O::Entity(e)) => m::Outcome::Entity { entity: entity(e) },
        Some(O::Related(r)) => m::Outcome::Related {
            relation: relation(r),
        },
        Some(O::Unrelated(id)) => m::Outcome::Unrelated { id },
        Some(O::Merged(g)) => m::Outcome::Merged { merge: merge(g) },
        None => return Err(MemoryError::Unavailable("an empty outcome".to_string())),
    })
}

pub fn filter(f: Option<pb::Filter>) -> Result<m::Filter, MemoryError> {
    let f = f.unwrap_or_default();
    Ok(m::Filter {
        stores: f
            .stores
            .iter()
            .map(|s| m::Store::parse(s))
            .collect::<Result<_, _>>()?,
        kinds: f.kinds,
        tags: f.tags,
        conversation: f.conversation,
        source: f.source,
        role: f.role,
        since: f.since,
        until: f.until,
    })
}

pub fn order(text: &str) -> Result<m::Order, MemoryError> {
    match text {
        "" | "newest" => Ok(m::Order::Newest),
        "oldest" => Ok(m::Order::Oldest),
        other => Err(invalid(
            "order",
            format!("`order` is newest or oldest, not `{other}`"),
        )),
    }
}

pub fn search_request(r: pb::SearchRequest) -> Result<m::SearchRequest, MemoryError> {
    Ok(m::SearchRequest {
        text: r.text,
        vector: r.vector.map(embedding),
        filter: filter(r.filter)?,
        mode: match r.mode.as_str() {
            "" | "hybrid" => m::Mode::Hybrid,
            "vector" => m::Mode::Vector,
            "keyword" => m::Mode::Keyword,
            other => return Err(invalid("mode", format!("unknown mode `{other}`"))),
        },
        limit: r.limit as usize,
        offset: r.offset as usize,
    })
}

pub fn search_results(r: pb::SearchResults) -> Result<m::SearchResults, MemoryError> {
    Ok(m::SearchResults {
        hits: r
            .hits
            .into_iter()
            .map(|h| {
                let why = h.why.unwrap_or_default();
                Ok(m::Hit {
                    record: record(h.record.unwrap_or_default())?,
                    why: m::Why {
                        vector_rank: why.vector_rank.map(|r| r as usize),
                        vector_score: why.vector_score,
                        keyword_rank: why.keyword_rank.map(|r| r as usize),
                        keyword_score: why.keyword_score,
                        fused_score: why.fused_score,
                    },
                })
            })
            .collect::<Result<_, MemoryError>>()?,
        vector_method: match r.vector_method.as_deref() {
            Some("hnsw") => Some("hnsw"),
            Some("exact") => Some("exact"),
            _ => None,
        },
    })
}

pub fn stats(s: pb::Stats) -> Result<m::Stats, MemoryError> {
    Ok(m::Stats {
        stores: s
            .stores
            .into_iter()
            .map(|s| {
                Ok(m::StoreStats {
                    store: m::Store::parse(&s.store)?,
                    records: s.records,
                    with_vectors: s.with_vectors,
                })
            })
            .collect::<Result<_, MemoryError>>()?,
        spaces: s
            .spaces
            .into_iter()
            .map(|s| {
                Ok(m::SpaceInfo {
                    name: s.name,
                    dimensions: s.dimensions as usize,
                    metric: metric(&s.metric)?,
                    indexed: s.indexed as usize,
                })
            })
            .collect::<Result<_, MemoryError>>()?,
        bytes: s.bytes,
        durability: match s.durability.as_str() {
            "normal" => m::Durability::Normal,
            _ => m::Durability::Full,
        },
    })
}

pub fn walk(o: Option<pb::WalkOptions>) -> Result<m::WalkOptions, MemoryError> {
    let o = o.unwrap_or_default();
    let default = m::WalkOptions::default();
    Ok(m::WalkOptions {
        relations: o.relations,
        direction: match o.direction.as_str() {
            "" | "both" => m::Direction::Both,
            "out" => m::Direction::Out,
            "in" => m::Direction::In,
            other => return Err(invalid("direction", format!("unknown direction `{other}`"))),
        },
        max_entities: if o.max_entities == 0 {
            default.max_entities
        } else {
            o.max_entities as usize
        },
    })
}

pub fn neighbourhood(n: pb::Neighbourhood) -> m::Neighbourhood {
    m::Neighbourhood {
        entities: n
            .entities
            .into_iter()
            .map(|r| m::Reached {
                entity: entity(r.entity.unwrap_or_default()),
                hops: r.hops,
            })
            .collect(),
        relations: n.relations.into_iter().map(relation).collect(),
        truncated: n.truncated,
    }
}

pub fn merge(g: pb::MergeResult) -> m::Merge {
    m::Merge {
        kept: g.kept,
        merged: g.merged,
    }
}

// ---- domain → wire -------------------------------------------------------------------------

pub fn embedding_pb(e: m::Embedding) -> pb::Embedding {
    pb::Embedding {
        space: e.space,
        vector: e.vector,
    }
}

pub fn record_pb(r: m::Record) -> pb::Record {
    pb::Record {
        id: r.id,
        store: r.store.name().to_string(),
        kind: r.kind,
        text: r.text,
        data_json: data_to_json(&r.data),
        tags: r.tags,
        conversation: r.conversation,
        source: r.source,
        role: r.role,
        key: r.key,
        space: r.space,
        created_at: r.created_at,
    }
}

pub fn entity_ref_pb(r: m::EntityRef) -> pb::EntityRef {
    pb::EntityRef {
        by: Some(match r {
            m::EntityRef::Id(id) => pb::entity_ref::By::Id(id),
            m::EntityRef::Name(name) => pb::entity_ref::By::Name(name),
        }),
    }
}

pub fn entity_pb(e: m::Entity) -> pb::Entity {
    pb::Entity {
        id: e.id,
        name: e.name,
        r#type: e.entity_type,
        description: e.description,
        aliases: e.aliases,
        source: e.source,
        created_at: e.created_at,
    }
}

pub fn relation_pb(r: m::Relation) -> pb::Relation {
    pb::Relation {
        id: r.id,
        subject: r.subject,
        relation: r.relation,
        object: r.object,
        evidence: r.evidence,
        source: r.source,
        confidence: r.confidence,
        created_at: r.created_at,
    }
}

fn metric_name(metric: m::Metric) -> String {
    match metric {
        m::Metric::Cosine => "cosine",
        m::Metric::Euclidean => "euclidean",
    }
    .to_string()
}

pub fn change_pb(c: m::Change) -> pb::Change {
    use pb::change::Change as C;
    let change = match c {
        m::Change::Insert { store, record } => C::Insert(pb::change::Insert {
            store: store.name().to_string(),
            record: Some(pb::NewRecord {
                kind: record.kind,
                text: record.text,
                data_json: data_to_json(&record.data),
                tags: record.tags,
                conversation: record.conversation,
                source: record.source,
                role: record.role,
                key: record.key,
                embedding: record.embedding.map(embedding_pb),
                created_at: record.created_at,
            }),
        }),
        m::Change::DefineSpace {
            space,
            dimensions,
            metric,
        } => C::DefineSpace(pb::change::DefineSpace {
            space,
            dimensions: u32::try_from(dimensions).unwrap_or(u32::MAX),
            metric: metric_name(metric),
        }),
        m::Change::Delete { id } => C::Delete(id),
        m::Change::Entity { entity } => C::Entity(pb::NewEntity {
            name: entity.name,
            r#type: entity.entity_type,
            description: entity.description,
            aliases: entity.aliases,
            source: entity.source,
            embedding: entity.embedding.map(embedding_pb),
        }),
        m::Change::Relate { relation } => C::Relate(pb::NewRelation {
            subject: Some(entity_ref_pb(relation.subject)),
            relation: relation.relation,
            object: Some(entity_ref_pb(relation.object)),
            evidence: relation.evidence,
            source: relation.source,
            confidence: relation.confidence,
        }),
        m::Change::Unrelate { id } => C::Unrelate(id),
        m::Change::Merge { kept, merged } => C::Merge(pb::change::Merge { kept, merged }),
        // `Change` is non-exhaustive in spirit: a new kind must be added to the proto too.
    };
    pb::Change {
        change: Some(change),
    }
}

pub fn outcome_pb(o: m::Outcome) -> pb::Outcome {
    use pb::outcome::Outcome as O;
    pb::Outcome {
        outcome: Some(match o {
            m::Outcome::Inserted { record } => O::Inserted(record_pb(record)),
            m::Outcome::SpaceDefined { space } => O::SpaceDefined(space),
            m::Outcome::Deleted { id } => O::Deleted(id),
            m::Outcome::Entity { entity } => O::Entity(entity_pb(entity)),
            m::Outcome::Related { relation } => O::Related(relation_pb(relation)),
            m::Outcome::Unrelated { id } => O::Unrelated(id),
            m::Outcome::Merged { merge } => O::Merged(merge_pb(merge)),
        }),
    }
}

pub fn filter_pb(f: m::Filter) -> pb::Filter {
    pb::Filter {
        stores: f.stores.iter().map(|s| s.name().to_string()).collect(),
        kinds: f.kinds,
        tags: f.tags,
        conversation: f.conversation,
        source: f.source,
        role: f.role,
        since: f.since,
        until: f.until,
    }
}

pub fn order_pb(o: m::Order) -> String {
    match o {
        m::Order::Newest => "newest",
        m::Order::Oldest => "oldest",
    }
    .to_string()
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn search_request_pb(r: m::SearchRequest) -> pb::SearchRequest {
    pb::SearchRequest {
        text: r.text,
        vector: r.vector.map(embedding_pb),
        filter: Some(filter_pb(r.filter)),
        mode: match r.mode {
            m::Mode::Hybrid => "hybrid",
            m::Mode::Vector => "vector",
            m::Mode::Keyword => "keyword",
        }
        .to_string(),
        limit: clamp(r.limit),
        offset: clamp(r.offset),
    }
}

pub fn search_results_pb(r: m::SearchResults) -> pb::SearchResults {
    pb::SearchResults {
        hits: r
            .hits
            .into_iter()
            .map(|h| pb::Hit {
                record: Some(record_pb(h.record)),
                why: Some(pb::Why {
                    vector_rank: h.why.vector_rank.map(clamp),
                    vector_score: h.why.vector_score,
                    keyword_rank: h.why.keyword_rank.map(clamp),
                    keyword_score: h.why.keyword_score,
                    fused_score: h.why.fused_score,
                }),
            })
            .collect(),
        vector_method: r.vector_method.map(str::to_string),
    }
}

pub fn stats_pb(s: m::Stats) -> pb::Stats {
    pb::Stats {
        stores: s
            .stores
            .into_iter()
            .map(|s| pb::StoreStats {
                store: s.store.name().to_string(),
                records: s.records,
                with_vectors: s.with_vectors,
            })
            .collect(),
        spaces: s
            .spaces
            .into_iter()
            .map(|s| pb::SpaceInfo {
                name: s.name,
                dimensions: clamp(s.dimensions),
                metric: metric_name(s.metric),
                indexed: s.indexed as u64,
            })
            .collect(),
        bytes: s.bytes,
        durability: match s.durability {
            m::Durability::Full => "full",
            m::Durability::Normal => "normal",
        }
        .to_string(),
    }
}

pub fn walk_pb(o: m::WalkOptions) -> pb::WalkOptions {
    pb::WalkOptions {
        relations: o.relations,
        direction: match o.direction {
            m::Direction::Out => "out",
            m::Direction::In => "in",
            m::Direction::Both => "both",
        }
        .to_string(),
        max_entities: clamp(o.max_entities),
    }
}

pub fn neighbourhood_pb(n: m::Neighbourhood) -> pb::Neighbourhood {
    pb::Neighbourhood {
        entities: n
            .entities
            .into_iter()
            .map(|r| pb::Reached {
                entity: Some(entity_pb(r.entity)),
                hops: r.hops,
            })
            .collect(),
        relations: n.relations.into_iter().map(relation_pb).collect(),
        truncated: n.truncated,
    }
}

pub fn merge_pb(g: m::Merge) -> pb::MergeResult {
    pb::MergeResult {
        kept: g.kept,
        merged: g.merged,
    }
}

// ---- errors --------------------------------------------------------------------------------

/// The metadata key carrying the exact error as JSON (binary, so any text survives).
const ERROR_KEY: &str = "tabagent-error-bin";

/// Every parameter name the memory reports, so that one read off the wire is `'static` again.
const PARAMS: &[&str] = &[
    "store",
    "kind",
    "text",
    "data",
    "tags",
    "conversation",
    "source",
    "role",
    "key",
    "space",
    "vector",
    "dimensions",
    "metric",
    "operations",
    "limit",
    "offset",
    "after",
    "since",
    "until",
    "query",
    "mode",
    "order",
    "name",
    "type",
    "aliases",
    "description",
    "relation",
    "evidence",
    "confidence",
    "entity",
    "subject",
    "object",
    "hops",
    "max_hops",
    "max_entities",
    "relations",
    "direction",
    "merge",
    "similarity",
    "id",
];

fn static_param(param: &str) -> &'static str {
    PARAMS
        .iter()
        .find(|p| **p == param)
        .copied()
        .unwrap_or("request")
}

/// A status that carries `err` whole.
pub fn status(err: MemoryError) -> Status {
    let (code, detail) = match &err {
        MemoryError::UnknownStore(name) => (
            Code::InvalidArgument,
            serde_json::json!({"kind": "unknown_store", "name": name}),
        ),
        MemoryError::Invalid { param, message } => (
            Code::InvalidArgument,
            serde_json::json!({"kind": "invalid", "param": param, "message": message}),
        ),
        MemoryError::Dimensions {
            space,
            expected,
            got,
        } => (
            Code::InvalidArgument,
            serde_json::json!({"kind": "dimensions", "name": space, "expected": expected, "got": got}),
        ),
        MemoryError::NotFound(id) => (
            Code::NotFound,
            serde_json::json!({"kind": "record", "id": id}),
        ),
        MemoryError::EntityNotFound(name) => (
            Code::NotFound,
            serde_json::json!({"kind": "entity", "name": name}),
        ),
        MemoryError::RelationNotFound(id) => (
            Code::NotFound,
            serde_json::json!({"kind": "relation", "id": id}),
        ),
        MemoryError::Closed | MemoryError::Unavailable(_) => (
            Code::Unavailable,
            serde_json::json!({"kind": "unavailable"}),
        ),
        _ => (Code::Internal, serde_json::json!({"kind": "internal"})),
    };
    let mut status = Status::new(code, err.to_string());
    status.metadata_mut().insert_bin(
        ERROR_KEY,
        tonic::metadata::MetadataValue::from_bytes(detail.to_string().as_bytes()),
    );
    status
}

/// The error a status carries; a status without one (the transport failed) is `Unavailable`.
pub fn error(status: Status) -> MemoryError {
    let detail: Option<serde_json::Value> = status
        .metadata()
        .get_bin(ERROR_KEY)
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(d) = detail else {
        return MemoryError::Unavailable(format!("{:?}: {}", status.code(), status.message()));
    };
    let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let number = |k: &str| d[k].as_i64().unwrap_or_default();
    match d["kind"].as_str().unwrap_or_default() {
        "unknown_store" => MemoryError::UnknownStore(text("name")),
        "invalid" => MemoryError::Invalid {
            param: static_param(&text("param")),
            message: text("message"),
        },
        "dimensions" => MemoryError::Dimensions {
            space: text("name"),
            expected: number("expected") as usize,
            got: number("got") as usize,
        },
        "record" => MemoryError::NotFound(number("id")),
        "entity" => MemoryError::EntityNotFound(text("name")),
        "relation" => MemoryError::RelationNotFound(number("id")),
        _ => MemoryError::Unavailable(status.message().to_string()),
    }
}
