//! Walking the graph: the neighbourhood of an entity out to k hops, and the shortest path
//! between two. Breadth-first, one query per hop per few hundred entities, bounded by
//! [`WalkOptions::max_entities`] so that a hub cannot make a walk unbounded.

use std::collections::{HashMap, HashSet, VecDeque};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::names::relation_type;
use super::write::{read_entity, resolve, row_to_relation, RELATION_COLUMNS};
use super::{Entity, EntityRef, Relation};
use crate::MemoryError;

/// Which way relations may be followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From subject to object only.
    Out,
    /// From object to subject only.
    In,
    /// Either way.
    #[default]
    Both,
}

/// What a walk may follow and how far it may spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalkOptions {
    /// Only relations of these types (all when empty).
    #[serde(default)]
    pub relations: Vec<String>,
    /// Which way relations are followed.
    #[serde(default)]
    pub direction: Direction,
    /// Entities a walk may reach before it stops (the result says it was cut short).
    pub max_entities: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            relations: Vec::new(),
            direction: Direction::Both,
            max_entities: 1000,
        }
    }
}

/// The most hops a neighbourhood spans.
pub const MAX_HOPS: u32 = 6;
/// The most hops a path may have.
pub const MAX_PATH_HOPS: u32 = 12;
/// The most entities any walk may visit.
pub const MAX_ENTITIES: usize = 100_000;

/// An entity a walk reached, and how many hops away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reached {
    /// The entity.
    pub entity: Entity,
    /// Hops from the start (0 for the start).
    pub hops: u32,
}

/// The entities within k hops of one, and the relations among them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbourhood {
    /// Nearest first, the start first of all.
    pub entities: Vec<Reached>,
    /// Every followed relation between two of them.
    pub relations: Vec<Relation>,
    /// The walk stopped at `max_entities`: farther entities exist.
    pub truncated: bool,
}

/// A shortest path: `relations[i]` joins `entities[i]` and `entities[i + 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphPath {
    /// From the start to the end.
    pub entities: Vec<Entity>,
    /// The relations along it.
    pub relations: Vec<Relation>,
}

impl WalkOptions {
    pub(crate) fn check(&self) -> Result<Vec<String>, MemoryError> {
        if self.max_entities == 0 || self.max_entities > MAX_ENTITIES {
            return Err(MemoryError::invalid(
                "max_entities",
                format!("max_entities is 1 to {MAX_ENTITIES}"),
            ));
        }
        if self.relations.len() > 64 {
            return Err(MemoryError::invalid(
                "relations",
                "at most 64 relation types",
            ));
        }
        Ok(self.relations.iter().map(|r| relation_type(r)).collect())
    }
}

/// What a walk reads, from whichever database holds the graph. The embedded store answers at
/// once (see [`ready`]); PostgreSQL over the network.
pub(crate) trait GraphReader {
    /// The entity `reference` names, or `EntityNotFound`.
    async fn resolve(&mut self, reference: &EntityRef) -> Result<i64, MemoryError>;
    /// The relations touching any of `ids` that a walk may follow (of one of `relations`'
    /// types when it names any), each with the entity it leads to.
    async fn edges_from(
        &mut self,
        ids: &[i64],
        relations: &[String],
        direction: Direction,
    ) -> Result<Vec<(i64, Relation)>, MemoryError>;
    /// The entities among `ids`.
    async fn entities(&mut self, ids: &[i64]) -> Result<HashMap<i64, Entity>, MemoryError>;
}

/// Runs a future that never waits, as the embedded store's reads do, on this thread.
pub(crate) fn ready<T>(
    work: impl std::future::Future<Output = Result<T, MemoryError>>,
) -> Result<T, MemoryError> {
    use std::task::{Context, Poll, Waker};
    let mut work = std::pin::pin!(work);
    match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(MemoryError::Corrupt(
            "a synchronous graph read waited".to_string(),
        )),
    }
}

/// The embedded store's graph.
pub(crate) struct SqliteGraph<'a>(pub &'a Connection);

impl GraphReader for SqliteGraph<'_> {
    async fn resolve(&mut self, reference: &EntityRef) -> Result<i64, MemoryError> {
        resolve(self.0, reference)
    }

    async fn edges_from(
        &mut self,
        ids: &[i64],
        relations: &[String],
        direction: Direction,
    ) -> Result<Vec<(i64, Relation)>, MemoryError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(400) {
            let marks = vec!["?"; chunk.len()].join(",");
            let types = if relations.is_empty() {
                String::new()
            } else {
                format!(
                    " AND relation IN ({})",
                    vec!["?"; relations.len()].join(",")
                )
            };
            for (column, forward) in sides(direction) {
                let sql = format!(
                    "SELECT {RELATION_COLUMNS} FROM relations WHERE {column} IN ({marks}){types}"
                );
                let params = chunk
                    .iter()
                    .map(|id| rusqlite::types::Value::Integer(*id))
                    .chain(relations.iter().cloned().map(rusqlite::types::Value::Text));
                let mut stmt = self.0.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(params), row_to_relation)?;
                for relation in rows {
                    found.push(leads_to(relation?, forward));
                }
            }
        }
        Ok(found)
    }

    async fn entities(&mut self, ids: &[i64]) -> Result<HashMap<i64, Entity>, MemoryError> {
        let mut found = HashMap::with_capacity(ids.len());
        for &id in ids {
            if let Some(entity) = read_entity(self.0, id)? {
                found.insert(id, entity);
            }
        }
        Ok(found)
    }
}

/// The columns a walk in `direction` follows relations from, and whether that is forward.
pub(crate) fn sides(direction: Direction) -> Vec<(&'static str, bool)> {
    let mut sides = Vec::new();
    if direction != Direction::In {
        sides.push(("subject", true));
    }
    if direction != Direction::Out {
        sides.push(("object", false));
    }
    sides
}

/// A relation followed from one end, with the entity at the other.
pub(crate) fn leads_to(relation: Relation, forward: bool) -> (i64, Relation) {
    let next = if forward {
        relation.object
    } else {
        relation.subject
    };
    (next, relation)
}

/// [`GraphReader::edges_from`] in a fixed order, older relations first, so that every
/// backend walks alike.
async fn edges(
    graph: &mut impl GraphReader,
    ids: &[i64],
    relations: &[String],
    direction: Direction,
) -> Result<Vec<(i64, Relation)>, MemoryError> {
    let mut found = graph.edges_from(ids, relations, direction).await?;
    found.sort_by_key(|(next, r)| (r.id, *next));
    Ok(found)
}

/// The entities within `hops` of `start`.
pub(crate) async fn neighbourhood(
    graph: &mut impl GraphReader,
    start: &EntityRef,
    hops: u32,
    options: &WalkOptions,
) -> Result<Neighbourhood, MemoryError> {
    if hops > MAX_HOPS {
        return Err(MemoryError::invalid(
            "hops",
            format!("hops is 0 to {MAX_HOPS}"),
        ));
    }
    let relations = options.check()?;
    let start = graph.resolve(start).await?;
    let mut depth: HashMap<i64, u32> = HashMap::from([(start, 0)]);
    let mut order = vec![start];
    let mut frontier = vec![start];
    let mut followed: HashMap<i64, Relation> = HashMap::new();
    let mut truncated = false;
    'walk: for hop in 1..=hops {
        let mut next = Vec::new();
        for (to, relation) in edges(graph, &frontier, &relations, options.direction).await? {
            if let std::collections::hash_map::Entry::Vacant(slot) = depth.entry(to) {
                if order.len() >= options.max_entities {
                    truncated = true;
                    break 'walk;
                }
                slot.insert(hop);
                order.push(to);
                next.push(to);
            }
            followed.insert(relation.id, relation);
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    let mut loaded = graph.entities(&order).await?;
    let mut relations: Vec<Relation> = followed
        .into_values()
        .filter(|r| depth.contains_key(&r.subject) && depth.contains_key(&r.object))
        .collect();
    relations.sort_by_key(|r| r.id);
    Ok(Neighbourhood {
        entities: order
            .into_iter()
            .filter_map(|id| {
                loaded.remove(&id).map(|entity| Reached {
                    entity,
                    hops: depth[&id],
                })
            })
            .collect(),
        relations,
        truncated,
    })
}

/// A shortest path from `from` to `to` of at most `max_hops` relations, if there is one.
pub(crate) async fn shortest_path(
    graph: &mut impl GraphReader,
    from: &EntityRef,
    to: &EntityRef,
    max_hops: u32,
    options: &WalkOptions,
) -> Result<Option<GraphPath>, MemoryError> {
    if max_hops == 0 || max_hops > MAX_PATH_HOPS {
        return Err(MemoryError::invalid(
            "max_hops",
            format!("max_hops is 1 to {MAX_PATH_HOPS}"),
        ));
    }
    let relations = options.check()?;
    let (from, to) = (graph.resolve(from).await?, graph.resolve(to).await?);
    // How each reached entity was reached: the entity before it and the relation between.
    let mut came_from: HashMap<i64, Option<(i64, Relation)>> = HashMap::from([(from, None)]);
    let mut frontier = VecDeque::from([from]);
    let mut hop = 0;
    while from != to && !came_from.contains_key(&to) && hop < max_hops && !frontier.is_empty() {
        hop += 1;
        let current: Vec<i64> = frontier.drain(..).collect();
        let mut seen_now = HashSet::new();
        for chunk in current.chunks(400) {
            for (next, relation) in edges(graph, chunk, &relations, options.direction).await? {
                if came_from.contains_key(&next) || !seen_now.insert(next) {
                    continue;
                }
                if came_from.len() >= options.max_entities {
                    return Ok(None);
                }
                let previous = if relation.object == next {
                    relation.subject
                } else {
                    relation.object
                };
                came_from.insert(next, Some((previous, relation)));
                frontier.push_back(next);
            }
        }
    }
    if !came_from.contains_key(&to) {
        return Ok(None);
    }
    let mut ids = vec![to];
    let mut steps = Vec::new();
    let mut at = to;
    while let Some(Some((previous, relation))) = came_from.get(&at) {
        steps.push(relation.clone());
        ids.push(*previous);
        at = *previous;
    }
    ids.reverse();
    steps.reverse();
    let mut loaded = graph.entities(&ids).await?;
    let entities = ids
        .iter()
        .map(|id| loaded.remove(id).ok_or(MemoryError::NotFound(*id)))
        .collect::<Result<_, _>>()?;
    Ok(Some(GraphPath {
        entities,
        relations: steps,
    }))
}
