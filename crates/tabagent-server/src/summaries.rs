//! Conversation summaries: a conversation that has grown by `memory.summarize_after` messages
//! since its last summary gets a new one, written in the background by the language model into
//! the summaries store (and on demand, `POST /v1/memory/conversations/{id}/summarize`).

use std::collections::HashSet;

use serde_json::json;
use tabagent_core::{ChatMessage, Role};
use tabagent_memory::{Filter, MemoryApi, NewRecord, Order, Record, Store};

use crate::error::ServiceError;
use crate::generation::tasks;
use crate::memory_backend::MemoryBackend;
use crate::state::AppState;

/// Characters of new messages a summary prompt holds (the newest kept).
const MAX_SUMMARY_INPUT_CHARS: usize = 12_000;

fn summary_key(conversation: &str) -> String {
    format!("conversation:{conversation}")
}

/// Messages of `conversation` after the last summary (oldest first), and that summary.
async fn unsummarized(
    memory: &MemoryBackend,
    conversation: &str,
) -> Result<(Option<Record>, Vec<Record>), tabagent_memory::MemoryError> {
    let summary = memory
        .get_by_key(Store::Summaries, summary_key(conversation))
        .await?;
    let through = summary.as_ref().and_then(|s| s.data["through"].as_i64());
    let filter = Filter {
        stores: vec![Store::Conversations],
        conversation: Some(conversation.to_string()),
        ..Default::default()
    };
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        let page = memory
            .list(filter.clone(), Order::Oldest, 1000, after)
            .await?;
        messages.extend(
            page.records
                .into_iter()
                .filter(|r| through.is_none_or(|t| r.id > t)),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok((summary, messages))
}

/// Writes a new summary of `conversation` if it has messages since the last one (or always,
/// with `force`); returns the summary in force.
pub async fn summarize(
    state: &AppState,
    conversation: &str,
    force: bool,
) -> Result<Option<Record>, ServiceError> {
    let memory = state
        .memory()
        .cloned()
        .ok_or_else(ServiceError::memory_off)?;
    let (previous, messages) = unsummarized(&memory, conversation).await?;
    let due = state.config().memory.summarize_after as usize;
    let enough = if force {
        !messages.is_empty()
    } else {
        due > 0 && messages.len() >= due
    };
    if !enough {
        return Ok(previous);
    }
    let Some(through) = messages.last().map(|m| m.id) else {
        return Ok(previous);
    };
    // The newest messages that fit, in order.
    let mut kept = Vec::new();
    let mut chars = 0;
    for m in messages.iter().rev() {
        chars += m.text.len() + 16;
        if chars > MAX_SUMMARY_INPUT_CHARS && !kept.is_empty() {
            break;
        }
        kept.push(m);
    }
    kept.reverse();
    let mut prompt = String::new();
    if let Some(previous) = &previous {
        prompt.push_str(&format!(
            "Summary so far:\n{}\n\nNew messages:\n",
            previous.text
        ));
    }
    for m in &kept {
        prompt.push_str(&format!(
            "{}: {}\n",
            m.role.as_deref().unwrap_or("user"),
            m.text
        ));
    }
    let model = tasks::model(state, None);
    let messages_in = vec![
        ChatMessage::new(
            Role::System,
            "Summarize the conversation below in a few sentences: who wants what, the facts \
             stated and what was decided. Write only the summary.",
        ),
        ChatMessage::new(Role::User, prompt),
    ];
    let out = tasks::run(state, &model, messages_in, None, 256).await?;
    let total = previous
        .as_ref()
        .and_then(|p| p.data["messages"].as_u64())
        .unwrap_or(0)
        + messages.len() as u64;
    let record = NewRecord {
        kind: Some("summary".to_string()),
        text: out.text.trim().to_string(),
        key: Some(summary_key(conversation)),
        conversation: Some(conversation.to_string()),
        data: json!({"through": through, "messages": total, "model": model}),
        ..Default::default()
    };
    let mut record = crate::embedding::records(state, vec![record]).await?;
    let record = record
        .pop()
        .ok_or_else(|| ServiceError::internal("no summary built"))?;
    let stored = memory.insert(Store::Summaries, record).await?;
    Ok(Some(stored))
}

/// Starts the background summarizer on the conversations `due` (`AppState::summary_due`
/// sends them): one at a time, each once however many times it was reported while waiting.
/// Without memory there is nothing to summarize, and `due` is dropped.
pub fn start(state: &AppState, mut due: tokio::sync::mpsc::UnboundedReceiver<String>) {
    if state.memory().is_none() {
        return;
    }
    let weak = state.downgrade();
    tokio::spawn(async move {
        while let Some(first) = due.recv().await {
            let mut batch: HashSet<String> = HashSet::from([first]);
            while let Ok(more) = due.try_recv() {
                batch.insert(more);
            }
            for conversation in batch {
                let Some(state) = weak.upgrade() else { return };
                if let Err(e) = summarize(&state, &conversation, false).await {
                    tracing::warn!(%conversation, error = %e, "could not summarize a conversation");
                }
            }
        }
    });
}
