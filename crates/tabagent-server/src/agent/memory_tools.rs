//! The built-in tools over the memory: `memory_search` (hybrid search over the stores),
//! `memory_write` (a note into `knowledge`; it writes, so it is off unless enabled),
//! `graph_lookup` (an entity of the knowledge graph and what it is related to) and
//! `document_search` (passages of ingested documents, from the `knowledge` store, with the
//! document and page each comes from).

use serde::Deserialize;
use serde_json::{json, Value};
use tabagent_agent::tools::{arguments, Tool, ToolError, ToolFuture};
use tabagent_core::ToolSpec;
use tabagent_memory::{
    EntityRef, Filter, MemoryApi as _, Mode, NewRecord, SearchRequest, Store, WalkOptions,
};

use super::excerpt;
use crate::state::AppState;

/// The most hits one search returns to the model.
const MAX_HITS: usize = 10;
/// The most of one record's text shown in a hit.
const MAX_HIT_CHARS: usize = 600;
/// The longest note `memory_write` keeps.
const MAX_NOTE_BYTES: usize = 8 * 1024;
/// The farthest `graph_lookup` walks, and the most entities it lists.
const MAX_HOPS: u32 = 2;
const MAX_ENTITIES: usize = 25;

fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: Some(description.into()),
        parameters,
        strict: false,
    }
}

fn failed(error: impl std::fmt::Display) -> ToolError {
    ToolError::Failed(error.to_string())
}

/// Hybrid search (keyword, and vector when the memory has an embedding model) in `stores`.
async fn search(
    state: &AppState,
    query: &str,
    stores: Vec<Store>,
    kinds: Vec<String>,
    limit: usize,
) -> Result<Vec<tabagent_memory::Hit>, ToolError> {
    let memory = state
        .memory()
        .ok_or_else(|| failed("the memory is off on this server"))?;
    let vector = crate::embedding::one_for_memory(state, query)
        .await
        .map_err(failed)?;
    let request = SearchRequest {
        text: Some(query.to_string()),
        vector,
        filter: Filter {
            stores,
            kinds,
            ..Filter::default()
        },
        mode: Mode::Hybrid,
        limit: limit.clamp(1, MAX_HITS),
        offset: 0,
    };
    Ok(memory.search(request).await.map_err(failed)?.hits)
}

/// `memory_search`.
pub struct MemorySearch(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    store: Option<String>,
    limit: Option<usize>,
}

impl Tool for MemorySearch {
    fn spec(&self) -> ToolSpec {
        spec(
            "memory_search",
            "Search the long-term memory (facts, notes, past conversations, documents, tool \
             results, past tasks) by meaning and keywords. Returns the best matching records.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for"},
                    "store": {"type": "string", "enum": Store::ALL.map(Store::name),
                              "description": "Search only this store (default: all)"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HITS}
                },
                "required": ["query"]
            }),
        )
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: SearchArgs = arguments(given)?;
            // All stores but `meta`, the server's bookkeeping (stored responses, settings).
            let stores =
                match args.store.as_deref() {
                    Some(name) => vec![Store::parse(name)
                        .map_err(|e| ToolError::InvalidArguments(e.to_string()))?],
                    None => Store::ALL
                        .into_iter()
                        .filter(|s| *s != Store::Meta)
                        .collect(),
                };
            let hits = search(
                &self.0,
                &args.query,
                stores,
                Vec::new(),
                args.limit.unwrap_or(5),
            )
            .await?;
            if hits.is_empty() {
                return Ok(format!("nothing in the memory matches {:?}", args.query));
            }
            Ok(hits
                .iter()
                .map(|hit| {
                    format!(
                        "[{} #{}] {}",
                        hit.record.store.name(),
                        hit.record.id,
                        excerpt(&hit.record.text, MAX_HIT_CHARS)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        })
    }
}

/// `memory_write`: writes, so offered only with `agent.allow_writes`.
pub struct MemoryWrite(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    text: String,
    #[serde(default)]
    tags: Vec<String>,
}

impl Tool for MemoryWrite {
    fn spec(&self) -> ToolSpec {
        spec(
            "memory_write",
            "Save a note (a fact or a summary worth remembering) to long-term memory, where \
             memory_search finds it later.",
            json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The note"},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8}
                },
                "required": ["text"]
            }),
        )
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: WriteArgs = arguments(given)?;
            if args.text.trim().is_empty() || args.text.len() > MAX_NOTE_BYTES {
                return Err(ToolError::InvalidArguments(format!(
                    "`text` must be 1 to {MAX_NOTE_BYTES} bytes"
                )));
            }
            if args.tags.len() > 8 || args.tags.iter().any(|t| t.len() > 64) {
                return Err(ToolError::InvalidArguments(
                    "at most 8 tags of at most 64 bytes".into(),
                ));
            }
            let memory = self
                .0
                .memory()
                .ok_or_else(|| failed("the memory is off on this server"))?;
            let embedding = crate::embedding::one_for_memory(&self.0, &args.text)
                .await
                .map_err(failed)?;
            let saved = memory
                .insert(
                    Store::Knowledge,
                    NewRecord {
                        kind: Some("note".into()),
                        text: args.text,
                        tags: args.tags,
                        source: Some("agent".into()),
                        embedding,
                        ..NewRecord::default()
                    },
                )
                .await
                .map_err(failed)?;
            Ok(format!("saved as knowledge #{}", saved.id))
        })
    }
}

/// `graph_lookup`.
pub struct GraphLookup(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphArgs {
    entity: String,
    hops: Option<u32>,
}

impl Tool for GraphLookup {
    fn spec(&self) -> ToolSpec {
        spec(
            "graph_lookup",
            "Look up an entity (a person, place, project, thing) in the knowledge graph: what \
             it is and how it is related to other entities.",
            json!({
                "type": "object",
                "properties": {
                    "entity": {"type": "string", "description": "The entity's name"},
                    "hops": {"type": "integer", "minimum": 1, "maximum": MAX_HOPS,
                             "description": "How far to follow relations (default 1)"}
                },
                "required": ["entity"]
            }),
        )
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: GraphArgs = arguments(given)?;
            let memory = self
                .0
                .memory()
                .ok_or_else(|| failed("the memory is off on this server"))?;
            let options = WalkOptions {
                max_entities: MAX_ENTITIES,
                ..WalkOptions::default()
            };
            let hops = args.hops.unwrap_or(1).clamp(1, MAX_HOPS);
            let around = match memory
                .neighbourhood(EntityRef::Name(args.entity.clone()), hops, options)
                .await
            {
                Ok(around) => around,
                Err(tabagent_memory::MemoryError::EntityNotFound(_)) => {
                    return Ok(format!(
                        "the knowledge graph has no entity named {:?}",
                        args.entity
                    ))
                }
                Err(error) => return Err(failed(error)),
            };
            let name_of = |id: i64| {
                around
                    .entities
                    .iter()
                    .find(|r| r.entity.id == id)
                    .map_or_else(|| format!("#{id}"), |r| r.entity.name.clone())
            };
            let mut lines = Vec::new();
            for reached in &around.entities {
                let entity = &reached.entity;
                let mut line = entity.name.clone();
                if let Some(kind) = &entity.entity_type {
                    line.push_str(&format!(" ({kind})"));
                }
                if let Some(description) = &entity.description {
                    line.push_str(&format!(": {}", excerpt(description, 200)));
                }
                lines.push(line);
            }
            for relation in &around.relations {
                lines.push(format!(
                    "{} --{}--> {}",
                    name_of(relation.subject),
                    relation.relation,
                    name_of(relation.object)
                ));
            }
            if around.truncated {
                lines.push(format!(
                    "(more than {MAX_ENTITIES} entities; the rest are left out)"
                ));
            }
            Ok(lines.join("\n"))
        })
    }
}

/// `document_search`: passages of ingested documents (records of kind `chunk` in the
/// `knowledge` store), each with the document and page it comes from.
pub struct DocumentSearch(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentArgs {
    query: String,
    limit: Option<usize>,
}

impl Tool for DocumentSearch {
    fn spec(&self) -> ToolSpec {
        spec(
            "document_search",
            "Search the user's ingested documents for passages about something. Returns the \
             best passages with the document each comes from.",
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HITS}
                },
                "required": ["query"]
            }),
        )
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: DocumentArgs = arguments(given)?;
            let hits = search(
                &self.0,
                &args.query,
                vec![Store::Knowledge],
                vec![tabagent_librarian::library::CHUNK_KIND.into()],
                args.limit.unwrap_or(4),
            )
            .await?;
            if hits.is_empty() {
                return Ok(format!("no document passage matches {:?}", args.query));
            }
            let memory = self
                .0
                .memory()
                .ok_or_else(|| failed("the memory is off on this server"))?;
            let records: Vec<&tabagent_memory::Record> = hits.iter().map(|h| &h.record).collect();
            let sources = tabagent_librarian::sources(memory, &records)
                .await
                .map_err(failed)?;
            Ok(hits
                .iter()
                .zip(sources)
                .map(|(hit, sources)| {
                    let cited = sources
                        .iter()
                        .map(tabagent_librarian::Source::label)
                        .collect::<Vec<_>>()
                        .join("; ");
                    let cited = if cited.is_empty() {
                        "unknown document".into()
                    } else {
                        cited
                    };
                    format!("[{cited}] {}", excerpt(&hit.record.text, MAX_HIT_CHARS * 2))
                })
                .collect::<Vec<_>>()
                .join("\n\n"))
        })
    }
}
