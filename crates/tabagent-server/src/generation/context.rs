//! The context-enhancement step: before a chat request is answered, what the memory holds
//! about its last user message is added to the prompt, as (part of) the first system message.
//! Sources are `ContextSource`s; the memory is the one there is. Notes are numbered; a passage
//! of a document is shown with its document and page, and the model is asked to cite what it
//! uses as `[n]`; the answer lists those sources (`sources`), so a client can show them.

use serde::Serialize;
use tabagent_core::{ChatMessage, Role};
use tabagent_memory::{Filter, MemoryApi, Mode, Record, SearchRequest, Store};
use tabagent_router::{ContextConfig, ContextSource};

use crate::error::ServiceError;
use crate::state::AppState;

/// What the step added.
#[derive(Debug, Clone, Default)]
pub struct Grounding {
    /// Memory records added.
    pub records: usize,
    /// The numbered notes that are passages of documents, with where they come from.
    pub sources: Vec<CitedSource>,
}

/// A note the answer may cite as `[index]`, and the document passage it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CitedSource {
    /// Its number in the prompt.
    pub index: usize,
    /// The memory record.
    pub record: i64,
    /// The document, page and range.
    #[serde(flatten)]
    pub source: tabagent_librarian::Source,
}

/// Adds what `config`'s source finds for the last user message to `messages`.
pub async fn enhance(
    state: &AppState,
    config: &ContextConfig,
    messages: &mut Vec<ChatMessage>,
) -> Result<Grounding, ServiceError> {
    let Some(question) = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User && !m.content.trim().is_empty())
        .map(|m| m.content.clone())
    else {
        return Ok(Grounding::default());
    };
    let records = match config.source {
        ContextSource::Memory => from_memory(state, config, question).await?,
    };
    if records.is_empty() {
        return Ok(Grounding::default());
    }
    let memory = state.memory().ok_or_else(ServiceError::memory_off)?;
    let refs: Vec<&Record> = records.iter().collect();
    let sources = tabagent_librarian::sources(memory, &refs).await?;
    let cites = sources.iter().any(|s| !s.is_empty());
    let mut context = String::from(if cites {
        "Notes from memory that may help with the answer. Where you use a note, cite its number \
         in brackets, like [1]:\n"
    } else {
        "Notes from memory that may help with the answer:\n"
    });
    let mut grounding = Grounding::default();
    for (record, sources) in records.iter().zip(sources) {
        let index = grounding.records + 1;
        let label = match sources.first() {
            Some(source) => format!(" ({})", source.label()),
            None => String::new(),
        };
        let line = format!("\n[{index}]{label} {}", record.text.trim());
        if context.len() + line.len() > config.max_chars {
            break;
        }
        context.push_str(&line);
        grounding.records += 1;
        grounding
            .sources
            .extend(sources.into_iter().map(|source| CitedSource {
                index,
                record: record.id,
                source,
            }));
    }
    if grounding.records == 0 {
        return Ok(Grounding::default());
    }
    match messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{context}", first.content);
        }
        _ => messages.insert(0, ChatMessage::new(Role::System, context)),
    }
    Ok(grounding)
}

/// The records that best match `question` (with text): hybrid search when an embedding model
/// is configured, keyword search otherwise.
async fn from_memory(
    state: &AppState,
    config: &ContextConfig,
    question: String,
) -> Result<Vec<Record>, ServiceError> {
    let memory = state.memory().ok_or_else(ServiceError::memory_off)?;
    let stores = config
        .stores
        .iter()
        .map(|s| Store::parse(s).map_err(ServiceError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let vector = crate::embedding::one_for_memory(state, &question).await?;
    let mode = if vector.is_some() {
        Mode::Hybrid
    } else {
        Mode::Keyword
    };
    let found = memory
        .search(SearchRequest {
            text: Some(question),
            vector,
            filter: Filter {
                stores,
                ..Filter::default()
            },
            mode,
            limit: config.limit,
            offset: 0,
        })
        .await?;
    Ok(found
        .hits
        .into_iter()
        .map(|h| h.record)
        .filter(|r| !r.text.trim().is_empty())
        .collect())
}
