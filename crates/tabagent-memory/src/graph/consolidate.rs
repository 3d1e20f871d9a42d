//! Finding duplicate entities: the same loose name (`The Beatles` / `beatles`), a name that is
//! another's alias, or — when asked — vectors closer than a threshold. Entities of two
//! different types never merge (`Apple` the company stays apart from `apple` the fruit); an
//! untyped entity joins a typed one.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::Connection;

use super::names::loose;
use super::write::{read_entity, ENTITY_COLUMNS};
use super::{ConsolidateOptions, Entity, Merge};
use crate::vector::{decode, Metric, VectorIndexes};
use crate::MemoryError;

/// Groups of entities, each with its oldest member, and what type the group has.
struct Groups {
    parent: HashMap<i64, i64>,
    kind: HashMap<i64, Option<String>>,
}

impl Groups {
    fn root(&mut self, id: i64) -> i64 {
        let mut at = id;
        while let Some(&up) = self.parent.get(&at).filter(|&&up| up != at) {
            at = up;
        }
        self.parent.insert(id, at);
        at
    }

    /// Joins the groups of `a` and `b` unless their types differ.
    fn join(&mut self, a: i64, b: i64) {
        let (ra, rb) = (self.root(a), self.root(b));
        if ra == rb {
            return;
        }
        let (ka, kb) = (self.kind[&ra].clone(), self.kind[&rb].clone());
        if let (Some(x), Some(y)) = (&ka, &kb) {
            if x != y {
                return;
            }
        }
        let (low, high) = (ra.min(rb), ra.max(rb));
        self.parent.insert(high, low);
        self.kind.insert(low, ka.or(kb));
    }
}

/// Refuses a similarity threshold outside (0, 1].
pub(crate) fn check_options(options: &ConsolidateOptions) -> Result<(), MemoryError> {
    if let Some(s) = options.similarity {
        if !(s > 0.0 && s <= 1.0) {
            return Err(MemoryError::invalid(
                "similarity",
                "similarity is above 0 and at most 1",
            ));
        }
    }
    Ok(())
}

/// The merges that would fold every group of duplicates into its oldest entity.
pub(crate) fn duplicates(
    conn: &Connection,
    indexes: &VectorIndexes,
    options: &ConsolidateOptions,
) -> Result<Vec<Merge>, MemoryError> {
    check_options(options)?;
    let all: Vec<Entity> = conn
        .prepare(&format!(
            "SELECT {ENTITY_COLUMNS} FROM records r
             WHERE r.store = 'knowledge' AND r.kind = 'entity' ORDER BY r.id"
        ))?
        .query_map([], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<i64>, _>>()?
        .into_iter()
        .filter_map(|id| read_entity(conn, id).transpose())
        .collect::<Result<_, _>>()?;
    let similar = match options.similarity {
        Some(threshold) => similar_pairs(conn, indexes, &all, threshold)?,
        None => Vec::new(),
    };
    Ok(plan(&all, &similar))
}

/// The merges for `all` (oldest first): entities sharing a loose name or alias join, then the
/// `similar` pairs; the types of two joined groups never differ.
pub(crate) fn plan(all: &[Entity], similar: &[(i64, i64)]) -> Vec<Merge> {
    let mut groups = Groups {
        parent: all.iter().map(|e| (e.id, e.id)).collect(),
        kind: all.iter().map(|e| (e.id, e.entity_type.clone())).collect(),
    };
    // Typed entities join first, so an untyped one goes with the typed group it matches.
    let mut by_name: BTreeMap<String, Vec<&Entity>> = BTreeMap::new();
    for entity in all {
        for name in std::iter::once(&entity.name).chain(&entity.aliases) {
            by_name.entry(loose(name)).or_default().push(entity);
        }
    }
    for members in by_name.values_mut() {
        members.sort_by_key(|e| (e.entity_type.is_none(), e.id));
        members.dedup_by_key(|e| e.id);
        for other in &members[1..] {
            groups.join(members[0].id, other.id);
        }
    }
    for &(a, b) in similar {
        if groups.parent.contains_key(&a) && groups.parent.contains_key(&b) {
            groups.join(a, b);
        }
    }
    let mut merges: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for entity in all {
        let root = groups.root(entity.id);
        if root != entity.id {
            merges.entry(root).or_default().push(entity.id);
        }
    }
    merges
        .into_iter()
        .map(|(kept, merged)| Merge { kept, merged })
        .collect()
}

/// The pairs of entities whose vectors in one space are at least `threshold` cosine-similar
/// (each entity against its 8 nearest).
fn similar_pairs(
    conn: &Connection,
    indexes: &VectorIndexes,
    all: &[Entity],
    threshold: f32,
) -> Result<Vec<(i64, i64)>, MemoryError> {
    let mut pairs = Vec::new();
    let ids: HashSet<i64> = all.iter().map(|e| e.id).collect();
    let mut stmt = conn.prepare(
        "SELECT v.record_id, s.name, v.vector FROM vectors v JOIN spaces s ON s.id = v.space_id
         JOIN records r ON r.id = v.record_id
         WHERE r.store = 'knowledge' AND r.kind = 'entity' ORDER BY v.record_id",
    )?;
    let vectors = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let is_entity = |key: u64| ids.contains(&(key as i64));
    for row in vectors {
        let (id, space, blob) = row?;
        let Some((metric, near)) = indexes.nearest(&space, &decode(&blob), 8, Some(&is_entity))?
        else {
            continue;
        };
        if metric != Metric::Cosine {
            continue;
        }
        for (other, distance) in near {
            if other != id && metric.score(distance) >= threshold {
                pairs.push((id, other));
            }
        }
    }
    Ok(pairs)
}
