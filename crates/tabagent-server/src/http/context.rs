//! The context-enhancement step: before a chat request is answered, what the memory holds
//! about its last user message is added to the prompt, as (part of) the first system message.
//! A route turns it on (`[router.routes.NAME.context]`); any request may ask for it
//! (`X-TabAgent-Context: memory`) or turn its route's off (`X-TabAgent-Context: none`).
//! Sources are `ContextSource`s; the memory is the one there is.

use axum::http::HeaderMap;
use tabagent_core::{ChatMessage, Role};
use tabagent_memory::{Filter, MemoryApi, Mode, SearchRequest, Store};
use tabagent_router::{ContextConfig, ContextSource};

use super::error::ApiError;
use super::memory::{embed, memory};
use crate::state::AppState;

/// The header asking for (or turning off) the step.
pub const HEADER: &str = "x-tabagent-context";
/// The response header saying how many records were added.
pub const RECORDS_HEADER: &str = "x-tabagent-context-records";

/// The step this request gets: its route's, unless the header says otherwise.
pub fn wanted(
    state: &AppState,
    model: &str,
    headers: &HeaderMap,
) -> Result<Option<ContextConfig>, ApiError> {
    // An alias of a route gets the route's step too.
    let route = state
        .config()
        .router
        .route(model)
        .and_then(|r| r.context.clone());
    let Some(value) = headers.get(HEADER) else {
        return Ok(route);
    };
    match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if v == "none" => Ok(None),
        Ok(v) if v == "memory" && !state.config().memory.enabled => Err(ApiError::bad_request(
            Some(HEADER),
            "this server's memory is off (memory.enabled = false): there is no context to add",
        )),
        Ok(v) if v == "memory" => Ok(Some(route.unwrap_or_default())),
        _ => Err(ApiError::bad_request(
            Some(HEADER),
            format!("{HEADER} must be `memory` or `none`"),
        )),
    }
}

/// Adds what `config`'s source finds for the last user message to `messages`; the number of
/// records added.
pub async fn enhance(
    state: &AppState,
    config: &ContextConfig,
    messages: &mut Vec<ChatMessage>,
) -> Result<usize, ApiError> {
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
) -> Result<Vec<String>, ApiError> {
    let memory = memory(state)?;
    let stores = config
        .stores
        .iter()
        .map(|s| Store::parse(s).map_err(ApiError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let vector = embed(state, vec![question.clone()])
        .await?
        .and_then(|(space, mut vectors)| {
            vectors
                .pop()
                .map(|vector| tabagent_memory::Embedding { space, vector })
        });
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
