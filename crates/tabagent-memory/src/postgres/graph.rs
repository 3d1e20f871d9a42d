//! The knowledge graph in PostgreSQL, with the embedded store's rules (names, folding, merge
//! planning and walks are shared; only the SQL differs).

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::records::{no_nul, set_vector};
use super::{pg_error, query_opt_cached};
use crate::graph::consolidate::{check_options, plan};
use crate::graph::walk::{leads_to, sides, GraphReader};
use crate::graph::write::{
    check_entity, check_merge, check_relation, display_name, entity_data, entity_from_data,
    entity_text, fold_merged, fold_new, KEY_PREFIX,
};
use crate::graph::{normalize, Direction, ENTITY_KIND};
use crate::record::Limits;
use crate::{
    now_ms, ConsolidateOptions, Entity, EntityRef, MemoryError, Merge, NewEntity, NewRelation,
    Relation, Store,
};

/// Serializes graph changes across processes: entity names stay unique and merges see a
/// graph no one else is changing.
pub(crate) const GRAPH_LOCK: i64 = 0x7461_6267_7261_7068; // "tabgraph"

const ENTITY_SQL: &str = "SELECT r.id, r.data, r.source, r.created_at FROM records r
     WHERE r.store = 'knowledge' AND r.kind = 'entity'";

const RELATION_COLUMNS: &str =
    "id, subject, relation, object, evidence, source, confidence, created_at";

fn row_to_entity(row: &Row) -> Entity {
    let data: serde_json::Value = row.get(1);
    entity_from_data(row.get(0), &data, row.get(2), row.get(3))
}

fn row_to_relation(row: &Row) -> Relation {
    Relation {
        id: row.get(0),
        subject: row.get(1),
        relation: row.get(2),
        object: row.get(3),
        evidence: row.get(4),
        source: row.get(5),
        confidence: row.get(6),
        created_at: row.get(7),
    }
}

/// The entity with record id `id`, if that record is one.
pub(crate) async fn read_entity(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<Entity>, MemoryError> {
    let sql = format!("{ENTITY_SQL} AND r.id = $1");
    Ok(query_opt_cached(client, &sql, &[&id])
        .await?
        .as_ref()
        .map(row_to_entity))
}

/// Relation `id`, if it exists.
pub(crate) async fn read_relation(
    client: &impl GenericClient,
    id: i64,
) -> Result<Option<Relation>, MemoryError> {
    Ok(client
        .query_opt(
            &format!("SELECT {RELATION_COLUMNS} FROM relations WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(row_to_relation))
}

/// The entity called `name` (by name or alias); the one whose own name it is wins.
async fn find_entity(client: &impl GenericClient, name: &str) -> Result<Option<i64>, MemoryError> {
    let normal = normalize(name);
    let key = format!("{KEY_PREFIX}{normal}");
    Ok(query_opt_cached(
        client,
        "SELECT n.entity FROM entity_names n JOIN records r ON r.id = n.entity
         WHERE n.name = $1 ORDER BY (r.key = $2) DESC, n.entity LIMIT 1",
        &[&normal, &key],
    )
    .await?
    .map(|r| r.get(0)))
}

/// The entity `reference` names, or `EntityNotFound`.
pub(crate) async fn resolve(
    client: &impl GenericClient,
    reference: &EntityRef,
) -> Result<i64, MemoryError> {
    let found = match reference {
        EntityRef::Id(id) => read_entity(client, *id).await?.map(|e| e.id),
        EntityRef::Name(name) if name.contains('\0') => None,
        EntityRef::Name(name) => find_entity(client, name).await?,
    };
    found.ok_or_else(|| MemoryError::EntityNotFound(reference.to_string()))
}

/// Saves `entity`'s fields and names over its record.
async fn save_entity(tx: &impl GenericClient, entity: &Entity) -> Result<(), MemoryError> {
    tx.execute(
        "UPDATE records SET text = $2, data = $3 WHERE id = $1",
        &[&entity.id, &entity_text(entity), &entity_data(entity)],
    )
    .await
    .map_err(pg_error)?;
    let add = tx
        .prepare_cached(
            "INSERT INTO entity_names(name, entity) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(pg_error)?;
    for name in std::iter::once(&entity.name).chain(&entity.aliases) {
        tx.execute(&add, &[&normalize(name), &entity.id])
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}

fn entity_has_nul(entity: &NewEntity) -> Option<&'static str> {
    let fields = [
        ("name", Some(&entity.name)),
        ("type", entity.entity_type.as_ref()),
        ("description", entity.description.as_ref()),
        ("source", entity.source.as_ref()),
    ];
    fields
        .into_iter()
        .chain(entity.aliases.iter().map(|a| ("aliases", Some(a))))
        .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
        .map(|(param, _)| param)
}

/// Creates `new`, or folds it into the entity that already has its name.
pub(crate) async fn upsert_entity(
    tx: &impl GenericClient,
    new: &NewEntity,
    limits: &Limits,
) -> Result<Entity, MemoryError> {
    check_entity(new, limits)?;
    if let Some(param) = entity_has_nul(new) {
        return Err(no_nul(param));
    }
    let mut entity = match find_entity(tx, &new.name).await? {
        Some(id) => read_entity(tx, id)
            .await?
            .ok_or(MemoryError::NotFound(id))?,
        None => {
            let name = display_name(&new.name);
            let created_at = now_ms();
            let id: i64 = tx
                .query_one(
                    "INSERT INTO records(store, kind, text, key, source, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &Store::Knowledge.name(),
                        &ENTITY_KIND,
                        &name,
                        &format!("{KEY_PREFIX}{}", normalize(&name)),
                        &new.source,
                        &created_at,
                    ],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            Entity::fresh(id, name, new.source.clone(), created_at)
        }
    };
    fold_new(&mut entity, new, limits)?;
    save_entity(tx, &entity).await?;
    if let Some(embedding) = &new.embedding {
        set_vector(tx, entity.id, embedding).await?;
    }
    read_entity(tx, entity.id)
        .await?
        .ok_or(MemoryError::NotFound(entity.id))
}

/// The entity a relation names, created (untyped) when a name is new.
async fn end(
    tx: &impl GenericClient,
    reference: &EntityRef,
    limits: &Limits,
) -> Result<i64, MemoryError> {
    match reference {
        EntityRef::Id(_) => resolve(tx, reference).await,
        EntityRef::Name(name) => Ok(upsert_entity(
            tx,
            &NewEntity {
                name: name.clone(),
                ..Default::default()
            },
            limits,
        )
        .await?
        .id),
    }
}

/// Records `new`; the same relation from the same evidence is recorded once.
pub(crate) async fn relate(
    tx: &impl GenericClient,
    new: &NewRelation,
    limits: &Limits,
) -> Result<Relation, MemoryError> {
    let relation = check_relation(new, limits)?;
    if relation.contains('\0') || new.source.as_ref().is_some_and(|s| s.contains('\0')) {
        return Err(no_nul("relation"));
    }
    if let Some(evidence) = new.evidence {
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM records WHERE id = $1)",
                &[&evidence],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if !exists {
            return Err(MemoryError::invalid(
                "evidence",
                format!("no record {evidence} to cite as evidence"),
            ));
        }
    }
    let subject = end(tx, &new.subject, limits).await?;
    let object = end(tx, &new.object, limits).await?;
    tx.execute(
        "INSERT INTO relations(subject, relation, object, evidence, source, confidence, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            &subject,
            &relation,
            &object,
            &new.evidence,
            &new.source,
            &new.confidence,
            &now_ms(),
        ],
    )
    .await
    .map_err(pg_error)?;
    let row = tx
        .query_one(
            &format!(
                "SELECT {RELATION_COLUMNS} FROM relations WHERE subject = $1 AND relation = $2
                 AND object = $3 AND coalesce(evidence, 0) = coalesce($4::bigint, 0)"
            ),
            &[&subject, &relation, &object, &new.evidence],
        )
        .await
        .map_err(pg_error)?;
    Ok(row_to_relation(&row))
}

/// Folds the entities `merged` into `kept` (see the embedded store's merge).
pub(crate) async fn merge(
    tx: &impl GenericClient,
    kept: i64,
    merged: &[i64],
    limits: &Limits,
) -> Result<Merge, MemoryError> {
    let mut entity = read_entity(tx, kept)
        .await?
        .ok_or(MemoryError::EntityNotFound(kept.to_string()))?;
    check_merge(kept, merged)?;
    let has_vector = |id: i64| async move {
        Ok::<bool, MemoryError>(
            tx.query_one(
                "SELECT EXISTS (SELECT 1 FROM vectors WHERE record_id = $1)",
                &[&id],
            )
            .await
            .map_err(pg_error)?
            .get(0),
        )
    };
    for &gone in merged {
        let other = read_entity(tx, gone)
            .await?
            .ok_or(MemoryError::EntityNotFound(gone.to_string()))?;
        fold_merged(&mut entity, &other);
        for (column, other_column) in [("subject", "object"), ("object", "subject")] {
            // Relations the kept entity already holds stay behind and go with `gone`.
            tx.execute(
                &format!(
                    "UPDATE relations r SET {column} = $1 WHERE r.{column} = $2 AND NOT EXISTS (
                         SELECT 1 FROM relations d WHERE d.{column} = $1
                             AND d.{other_column} = r.{other_column} AND d.relation = r.relation
                             AND coalesce(d.evidence, 0) = coalesce(r.evidence, 0))"
                ),
                &[&kept, &gone],
            )
            .await
            .map_err(pg_error)?;
        }
        if !has_vector(kept).await? && has_vector(gone).await? {
            tx.execute(
                "INSERT INTO vectors(record_id, space_id, vector)
                 SELECT $1, space_id, vector FROM vectors WHERE record_id = $2",
                &[&kept, &gone],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.execute("DELETE FROM records WHERE id = $1", &[&gone])
            .await
            .map_err(pg_error)?;
    }
    tx.execute(
        "DELETE FROM relations WHERE subject = $1 AND object = $1",
        &[&kept],
    )
    .await
    .map_err(pg_error)?;
    entity.aliases.truncate(limits.max_tags);
    save_entity(tx, &entity).await?;
    Ok(Merge {
        kept,
        merged: merged.to_vec(),
    })
}

/// The merges that would fold every group of duplicate entities into its oldest.
pub(crate) async fn duplicates(
    client: &impl GenericClient,
    options: &ConsolidateOptions,
) -> Result<Vec<Merge>, MemoryError> {
    check_options(options)?;
    let all: Vec<Entity> = client
        .query(&format!("{ENTITY_SQL} ORDER BY r.id"), &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(row_to_entity)
        .collect();
    let mut similar = Vec::new();
    if let Some(threshold) = options.similarity {
        // Each entity against its 8 nearest entities in its (cosine) space.
        let spaces = client
            .query(
                "SELECT DISTINCT s.id, s.dimensions FROM spaces s
                 JOIN vectors v ON v.space_id = s.id JOIN records r ON r.id = v.record_id
                 WHERE s.metric = 'cosine' AND r.store = 'knowledge' AND r.kind = 'entity'",
                &[],
            )
            .await
            .map_err(pg_error)?;
        for space in spaces {
            let (space, dimensions): (i32, i32) = (space.get(0), space.get(1));
            let column = |alias: &str| format!("({alias}.vector::vector({dimensions}))");
            let rows = client
                .query(
                    &format!(
                        "WITH entities AS (
                             SELECT v.record_id, v.vector FROM vectors v JOIN records r ON r.id = v.record_id
                             WHERE v.space_id = $1 AND r.store = 'knowledge' AND r.kind = 'entity')
                         SELECT a.record_id, n.record_id FROM entities a CROSS JOIN LATERAL (
                             SELECT b.record_id, {b} <=> {a} AS distance FROM entities b
                             ORDER BY {b} <=> {a} LIMIT 8) n
                         WHERE n.record_id <> a.record_id AND 1 - n.distance >= $2",
                        a = column("a"),
                        b = column("b"),
                    ),
                    &[&space, &f64::from(threshold)],
                )
                .await
                .map_err(pg_error)?;
            similar.extend(
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))),
            );
        }
    }
    Ok(plan(&all, &similar))
}

/// A walk's view of the graph in PostgreSQL: one query per hop and side.
pub(crate) struct PgGraph<'a, C>(pub &'a C);

impl<C: GenericClient> GraphReader for PgGraph<'_, C> {
    async fn resolve(&mut self, reference: &EntityRef) -> Result<i64, MemoryError> {
        resolve(self.0, reference).await
    }

    async fn edges_from(
        &mut self,
        ids: &[i64],
        relations: &[String],
        direction: Direction,
    ) -> Result<Vec<(i64, Relation)>, MemoryError> {
        let ids = ids.to_vec();
        let mut found = Vec::new();
        for (column, forward) in sides(direction) {
            let rows = if relations.is_empty() {
                self.0
                    .query(
                        &format!(
                            "SELECT {RELATION_COLUMNS} FROM relations WHERE {column} = ANY($1)"
                        ),
                        &[&ids],
                    )
                    .await
            } else {
                self.0
                    .query(
                        &format!(
                            "SELECT {RELATION_COLUMNS} FROM relations
                             WHERE {column} = ANY($1) AND relation = ANY($2)"
                        ),
                        &[&ids, &relations],
                    )
                    .await
            }
            .map_err(pg_error)?;
            found.extend(rows.iter().map(|r| leads_to(row_to_relation(r), forward)));
        }
        Ok(found)
    }

    async fn entities(&mut self, ids: &[i64]) -> Result<HashMap<i64, Entity>, MemoryError> {
        let ids = ids.to_vec();
        Ok(self
            .0
            .query(&format!("{ENTITY_SQL} AND r.id = ANY($1)"), &[&ids])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|row| {
                let entity = row_to_entity(row);
                (entity.id, entity)
            })
            .collect())
    }
}
