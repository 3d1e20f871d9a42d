//! The context-enhancement step: before a chat request is answered, what the memory holds
//! about its last user message is added to the prompt, as (part of) the first system message.
//! Sources are `ContextSource`s; the memory is the one there is.

use tabagent_core::{ChatMessage, Role};
use tabagent_memory::{Filter, MemoryApi, Mode, SearchRequest, Store};
use tabagent_router::{ContextConfig, ContextSource};

use crate::error::ServiceError;
use crate::state::AppState;

/// Adds what `config`'s source finds for the last user message to `messages`; the number of
/// records added.
pub async fn enhance(
    state: &AppState,
    config: &ContextConfig,
    messages: &mut Vec<ChatMessage>,
) -> Result<usize, ServiceError> {
    let Some(question) = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User && !m.content.trim().is_empty())
        .map(|m| m.content.clone())
    else {
        return Ok(0);
    };
    let notes = match config.source {
        ContextSource::Memory => from_memory(state, config, question).await?,
    };
    if notes.is_empty() {
        return Ok(0);
    }
    let mut context = String::from("Notes from memory that may help with the answer:\n");
    let mut added = 0;
    for note in &notes {
        let line = format!("\n- {}", note.trim());
        if context.len() + line.len() > config.max_chars {
            break;
        }
        context.push_str(&line);
        added += 1;
    }
    if added == 0 {
        return Ok(0);
    }
    match messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{context}", first.content);
        }
        _ => messages.insert(0, ChatMessage::new(Role::System, context)),
    }
    Ok(added)
}

/// The texts of the records that best match `question`: hybrid search when an embedding model
/// is configured, keyword search otherwise.
async fn from_memory(
    state: &AppState,
    config: &ContextConfig,
    question: String,
) -> Result<Vec<String>, ServiceError> {
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
        .map(|h| h.record.text)
        .filter(|t| !t.trim().is_empty())
        .collect())
}
