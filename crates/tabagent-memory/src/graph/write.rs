//! Writing the graph inside the writer's transaction: entities (created or merged by name),
//! relations, and merging duplicates.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::names::{normalize, relation_type};
use super::{Entity, EntityRef, Merge, NewEntity, NewRelation, Relation, ENTITY_KIND};
use crate::record::{check_label, check_vector, Limits};
use crate::vector::{encode, Metric};
use crate::writer::ensure_space;
use crate::{now_ms, MemoryError, Store};

/// The key of an entity's record: its normalized name.
pub(crate) const KEY_PREFIX: &str = "entity:";

pub(crate) const ENTITY_COLUMNS: &str = "r.id, r.data, r.source, r.created_at";

fn row_to_entity(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entity> {
    let data: String = row.get(1)?;
    let data: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
    Ok(entity_from_data(
        row.get(0)?,
        &data,
        row.get(2)?,
        row.get(3)?,
    ))
}

/// An entity from its record's `data` (see [`entity_data`]) and columns.
pub(crate) fn entity_from_data(
    id: i64,
    data: &serde_json::Value,
    source: Option<String>,
    created_at: i64,
) -> Entity {
    let text = |field: &str| data[field].as_str().map(str::to_string);
    Entity {
        id,
        name: text("name").unwrap_or_default(),
        entity_type: text("type"),
        description: text("description"),
        aliases: data["aliases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        source,
        created_at,
    }
}

/// The entity with record id `id`, if that record is one.
pub(crate) fn read_entity(conn: &Connection, id: i64) -> Result<Option<Entity>, MemoryError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {ENTITY_COLUMNS} FROM records r
             WHERE r.id = ?1 AND r.store = 'knowledge' AND r.kind = 'entity'"
        ))?
        .query_row([id], row_to_entity)
        .optional()?)
}

/// The entity called `name` (by name or alias); the one whose own name it is wins.
pub(crate) fn find_entity(conn: &Connection, name: &str) -> Result<Option<i64>, MemoryError> {
    let normal = normalize(name);
    Ok(conn
        .prepare_cached(
            "SELECT n.entity FROM entity_names n JOIN records r ON r.id = n.entity
             WHERE n.name = ?1 ORDER BY (r.key = ?2) DESC, n.entity LIMIT 1",
        )?
        .query_row(params![normal, format!("{KEY_PREFIX}{normal}")], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The entity `reference` names, or a `NotFound` naming what was asked for.
pub(crate) fn resolve(conn: &Connection, reference: &EntityRef) -> Result<i64, MemoryError> {
    let found = match reference {
        EntityRef::Id(id) => read_entity(conn, *id)?.map(|e| e.id),
        EntityRef::Name(name) => find_entity(conn, name)?,
    };
    found.ok_or_else(|| MemoryError::EntityNotFound(reference.to_string()))
}

pub(crate) fn check_entity(entity: &NewEntity, limits: &Limits) -> Result<(), MemoryError> {
    if normalize(&entity.name).is_empty() {
        return Err(MemoryError::invalid("name", "an entity needs a name"));
    }
    check_label("name", Some(&entity.name), limits)?;
    check_label("type", entity.entity_type.as_deref(), limits)?;
    if entity.aliases.len() > limits.max_tags {
        return Err(MemoryError::invalid(
            "aliases",
            format!("at most {} aliases", limits.max_tags),
        ));
    }
    for alias in &entity.aliases {
        check_label("aliases", Some(alias), limits)?;
    }
    if entity
        .description
        .as_ref()
        .is_some_and(|d| d.len() > limits.max_text_bytes)
    {
        return Err(MemoryError::invalid(
            "description",
            format!("a description is at most {} bytes", limits.max_text_bytes),
        ));
    }
    check_label("source", entity.source.as_deref(), limits)?;
    if let Some(embedding) = &entity.embedding {
        check_vector(embedding, limits)?;
    }
    Ok(())
}

/// The text keyword search sees: name, aliases and description.
pub(crate) fn entity_text(entity: &Entity) -> String {
    let mut text = entity.name.clone();
    if !entity.aliases.is_empty() {
        text.push_str(&format!(" ({})", entity.aliases.join(", ")));
    }
    if let Some(description) = &entity.description {
        text.push_str(&format!(": {description}"));
    }
    text
}

pub(crate) fn entity_data(entity: &Entity) -> serde_json::Value {
    serde_json::json!({
        "name": entity.name,
        "type": entity.entity_type,
        "description": entity.description,
        "aliases": entity.aliases,
    })
}

/// Saves `entity`'s fields and names over its record.
fn save_entity(conn: &Connection, entity: &Entity) -> Result<(), MemoryError> {
    conn.execute(
        "UPDATE records SET text = ?2, data = ?3 WHERE id = ?1",
        params![
            entity.id,
            entity_text(entity),
            entity_data(entity).to_string()
        ],
    )?;
    let mut add =
        conn.prepare_cached("INSERT OR IGNORE INTO entity_names(name, entity) VALUES (?1, ?2)")?;
    for name in std::iter::once(&entity.name).chain(&entity.aliases) {
        add.execute(params![normalize(name), entity.id])?;
    }
    Ok(())
}

pub(crate) fn add_alias(entity: &mut Entity, alias: &str) {
    let normal = normalize(alias);
    if normal.is_empty() || normal == normalize(&entity.name) {
        return;
    }
    if !entity.aliases.iter().any(|a| normalize(a) == normal) {
        entity.aliases.push(alias.trim().to_string());
    }
}

impl Entity {
    /// A just-created entity: a name and nothing known about it yet.
    pub(crate) fn fresh(id: i64, name: String, source: Option<String>, created_at: i64) -> Self {
        Entity {
            id,
            name,
            entity_type: None,
            description: None,
            aliases: Vec::new(),
            source,
            created_at,
        }
    }
}

/// Folds what `new` says into `entity`: the type fills a gap, a new description replaces the
/// old, names become aliases.
pub(crate) fn fold_new(
    entity: &mut Entity,
    new: &NewEntity,
    limits: &Limits,
) -> Result<(), MemoryError> {
    add_alias(entity, &new.name);
    for alias in &new.aliases {
        add_alias(entity, alias);
    }
    if entity.entity_type.is_none() {
        entity.entity_type = new.entity_type.as_deref().map(normalize);
    }
    if let Some(description) = new.description.as_ref().filter(|d| !d.trim().is_empty()) {
        entity.description = Some(description.trim().to_string());
    }
    if entity.aliases.len() > limits.max_tags {
        return Err(MemoryError::invalid(
            "aliases",
            format!(
                "entity {} would have more than {} aliases",
                entity.id, limits.max_tags
            ),
        ));
    }
    Ok(())
}

/// The name a new entity is stored under: its words, single-spaced.
pub(crate) fn display_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Folds the merged entity `other` into `entity`: its names become aliases, its type and
/// description fill gaps.
pub(crate) fn fold_merged(entity: &mut Entity, other: &Entity) {
    add_alias(entity, &other.name);
    for alias in &other.aliases {
        add_alias(entity, alias);
    }
    if entity.entity_type.is_none() {
        entity.entity_type = other.entity_type.clone();
    }
    if entity.description.is_none() {
        entity.description = other.description.clone();
    }
}

/// Creates `new`, or folds it into the entity that already has its name: the type and
/// description fill gaps (a new description replaces the old), aliases accumulate.
pub(crate) fn upsert_entity(
    conn: &Connection,
    new: &NewEntity,
    limits: &Limits,
) -> Result<Entity, MemoryError> {
    check_entity(new, limits)?;
    let mut entity = match find_entity(conn, &new.name)? {
        Some(id) => read_entity(conn, id)?.ok_or(MemoryError::NotFound(id))?,
        None => {
            let name = display_name(&new.name);
            let id: i64 = conn.query_row(
                "INSERT INTO records(store, kind, text, key, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![
                    Store::Knowledge.name(),
                    ENTITY_KIND,
                    name,
                    format!("{KEY_PREFIX}{}", normalize(&name)),
                    new.source,
                    now_ms()
                ],
                |r| r.get(0),
            )?;
            Entity::fresh(id, name, new.source.clone(), now_ms())
        }
    };
    fold_new(&mut entity, new, limits)?;
    save_entity(conn, &entity)?;
    if let Some(embedding) = &new.embedding {
        let space = ensure_space(
            conn,
            &embedding.space,
            embedding.vector.len(),
            Metric::Cosine,
        )?;
        conn.execute("DELETE FROM vectors WHERE record_id = ?1", [entity.id])?;
        conn.execute(
            "INSERT INTO vectors(record_id, space_id, vector) VALUES (?1, ?2, ?3)",
            params![entity.id, space, encode(&embedding.vector)],
        )?;
    }
    read_entity(conn, entity.id)?.ok_or(MemoryError::NotFound(entity.id))
}

/// The entity a relation names, created (untyped) when a name is new.
fn end(conn: &Connection, reference: &EntityRef, limits: &Limits) -> Result<i64, MemoryError> {
    match reference {
        EntityRef::Id(_) => resolve(conn, reference),
        EntityRef::Name(name) => Ok(upsert_entity(
            conn,
            &NewEntity {
                name: name.clone(),
                ..Default::default()
            },
            limits,
        )?
        .id),
    }
}

pub(crate) const RELATION_COLUMNS: &str =
    "id, subject, relation, object, evidence, source, confidence, created_at";

pub(crate) fn row_to_relation(row: &rusqlite::Row<'_>) -> rusqlite::Result<Relation> {
    Ok(Relation {
        id: row.get(0)?,
        subject: row.get(1)?,
        relation: row.get(2)?,
        object: row.get(3)?,
        evidence: row.get(4)?,
        source: row.get(5)?,
        confidence: row.get::<_, Option<f64>>(6)?.map(|c| c as f32),
        created_at: row.get(7)?,
    })
}

/// Refuses a relation without a type, or with an oversized label or a confidence outside
/// [0, 1]; returns its type as stored.
pub(crate) fn check_relation(new: &NewRelation, limits: &Limits) -> Result<String, MemoryError> {
    let relation = relation_type(&new.relation);
    if relation.is_empty() {
        return Err(MemoryError::invalid("relation", "a relation needs a type"));
    }
    check_label("relation", Some(&relation), limits)?;
    check_label("source", new.source.as_deref(), limits)?;
    if let Some(c) = new.confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(MemoryError::invalid(
                "confidence",
                "confidence is between 0 and 1",
            ));
        }
    }
    Ok(relation)
}

/// Records `new`; the same relation from the same evidence is recorded once.
pub(crate) fn relate(
    conn: &Connection,
    new: &NewRelation,
    limits: &Limits,
) -> Result<Relation, MemoryError> {
    let relation = check_relation(new, limits)?;
    if let Some(evidence) = new.evidence {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM records WHERE id = ?1)",
            [evidence],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(MemoryError::invalid(
                "evidence",
                format!("no record {evidence} to cite as evidence"),
            ));
        }
    }
    let subject = end(conn, &new.subject, limits)?;
    let object = end(conn, &new.object, limits)?;
    conn.execute(
        "INSERT OR IGNORE INTO relations(subject, relation, object, evidence, source, confidence, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![subject, relation, object, new.evidence, new.source, new.confidence.map(f64::from), now_ms()],
    )?;
    Ok(conn.query_row(
        &format!(
            "SELECT {RELATION_COLUMNS} FROM relations
             WHERE subject = ?1 AND relation = ?2 AND object = ?3 AND ifnull(evidence, 0) = ifnull(?4, 0)"
        ),
        params![subject, relation, object, new.evidence],
        row_to_relation,
    )?)
}

/// Deletes relation `id`.
pub(crate) fn unrelate(conn: &Connection, id: i64) -> Result<(), MemoryError> {
    if conn.execute("DELETE FROM relations WHERE id = ?1", [id])? == 0 {
        return Err(MemoryError::RelationNotFound(id));
    }
    Ok(())
}

/// Refuses a merge that names no entity, one twice, or the kept one.
pub(crate) fn check_merge(kept: i64, merged: &[i64]) -> Result<(), MemoryError> {
    let distinct: BTreeSet<i64> = merged.iter().copied().collect();
    if distinct.is_empty() || distinct.len() != merged.len() || distinct.contains(&kept) {
        return Err(MemoryError::invalid(
            "merge",
            "name one or more distinct entities to merge, other than the one kept",
        ));
    }
    Ok(())
}

/// Folds the entities `merged` into `kept`: their relations move to it (duplicates collapse,
/// relations between them vanish), their names become its aliases, it takes a description and
/// a vector it lacks, and they are deleted.
pub(crate) fn merge(
    conn: &Connection,
    kept: i64,
    merged: &[i64],
    limits: &Limits,
) -> Result<Merge, MemoryError> {
    let mut entity =
        read_entity(conn, kept)?.ok_or(MemoryError::EntityNotFound(kept.to_string()))?;
    check_merge(kept, merged)?;
    let has_vector = |id: i64| -> Result<bool, MemoryError> {
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM vectors WHERE record_id = ?1)",
            [id],
            |r| r.get(0),
        )?)
    };
    for &gone in merged {
        let other =
            read_entity(conn, gone)?.ok_or(MemoryError::EntityNotFound(gone.to_string()))?;
        fold_merged(&mut entity, &other);
        for column in ["subject", "object"] {
            conn.execute(
                &format!("UPDATE OR IGNORE relations SET {column} = ?1 WHERE {column} = ?2"),
                params![kept, gone],
            )?;
        }
        if !has_vector(kept)? && has_vector(gone)? {
            // Copied, not moved: the change log only sees inserts and deletes.
            conn.execute(
                "INSERT INTO vectors(record_id, space_id, vector)
                 SELECT ?1, space_id, vector FROM vectors WHERE record_id = ?2",
                params![kept, gone],
            )?;
        }
        // What is left of it (relations that duplicated the kept entity's) goes with it.
        conn.execute("DELETE FROM records WHERE id = ?1", [gone])?;
    }
    conn.execute(
        "DELETE FROM relations WHERE subject = ?1 AND object = ?1",
        [kept],
    )?;
    entity.aliases.truncate(limits.max_tags);
    save_entity(conn, &entity)?;
    Ok(Merge {
        kept,
        merged: merged.to_vec(),
    })
}
