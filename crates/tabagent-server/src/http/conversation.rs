//! Conversations in memory: a chat request that carries a conversation id (`conversation_id`
//! or the `X-Conversation-Id` header) is recorded with its reply, and a conversation that has
//! grown by `memory.summarize_after` messages since its last summary gets a new one, written
//! in the background by the language model into the summaries store.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::json;
use tabagent_core::{ChatMessage, FinishReason, Role, Usage};
use tabagent_memory::{Change, Filter, MemoryApi, NewRecord, Order, Record, Store};

use super::error::{ApiError, ErrorBody};
use super::llm_task;
use super::memory::{embed_records, RecordObject};
use crate::memory_backend::MemoryBackend;
use crate::state::AppState;

/// The header that names a conversation.
pub const HEADER: &str = "x-conversation-id";
/// Longest conversation id.
const MAX_ID_BYTES: usize = 512;
/// Characters of new messages a summary prompt holds (the newest kept).
const MAX_SUMMARY_INPUT_CHARS: usize = 12_000;

/// The conversation a request names, from its body or header (which must agree).
pub fn conversation_id(
    headers: &HeaderMap,
    field: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get(HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        Some("conversation_id"),
                        "the X-Conversation-Id header is not visible ASCII",
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    let id =
        match (field, header) {
            (Some(a), Some(b)) if a != b => return Err(ApiError::bad_request(
                Some("conversation_id"),
                "`conversation_id` and the X-Conversation-Id header name different conversations",
            )),
            (field, header) => field.or(header),
        };
    if let Some(id) = &id {
        if id.trim().is_empty() || id.len() > MAX_ID_BYTES {
            return Err(ApiError::bad_request(
                Some("conversation_id"),
                format!("a conversation id is 1 to {MAX_ID_BYTES} bytes, not blank"),
            ));
        }
    }
    Ok(id)
}

/// An exchange to record once the reply is complete.
pub struct Recording {
    memory: MemoryBackend,
    conversation: String,
    model: String,
    /// The request's new turn: the messages after its last assistant message.
    turn: Vec<ChatMessage>,
}

impl Recording {
    /// The recording for a chat request, when it names a conversation and memory is on.
    pub fn new(
        state: &AppState,
        conversation: Option<String>,
        model: &str,
        messages: &[ChatMessage],
    ) -> Option<Self> {
        let memory = state.memory()?.clone();
        let conversation = conversation?;
        let start = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .map_or(0, |i| i + 1);
        Some(Self {
            memory,
            conversation,
            model: model.to_string(),
            turn: messages[start..].to_vec(),
        })
    }

    /// The conversation's id.
    pub fn conversation(&self) -> &str {
        &self.conversation
    }

    /// Writes the turn and `reply` together, then tells the summarizer.
    pub async fn finish(
        self,
        state: &AppState,
        reply: String,
        reason: FinishReason,
        usage: Usage,
    ) -> Result<(), ApiError> {
        let message = |role: Role, text: String, data| NewRecord {
            kind: Some("message".to_string()),
            text,
            role: Some(role.as_str().to_string()),
            conversation: Some(self.conversation.clone()),
            data,
            ..Default::default()
        };
        let mut records: Vec<NewRecord> = self
            .turn
            .into_iter()
            .map(|m| message(m.role, m.content, serde_json::Value::Null))
            .collect();
        records.push(message(
            Role::Assistant,
            reply,
            json!({
                "model": self.model,
                "finish_reason": reason.as_str(),
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            }),
        ));
        let records = embed_records(state, records).await?;
        let changes = records
            .into_iter()
            .map(|record| Change::Insert {
                store: Store::Conversations,
                record,
            })
            .collect();
        self.memory.apply(changes).await?;
        if state.config().memory.summarize_after > 0 {
            if let Some(due) = state.summaries_due().get() {
                let _ = due.send(self.conversation);
            }
        }
        Ok(())
    }
}

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
) -> Result<Option<Record>, ApiError> {
    let memory = super::memory::memory(state)?;
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
    let model = llm_task::model(state, None);
    let messages_in = vec![
        ChatMessage::new(
            Role::System,
            "Summarize the conversation below in a few sentences: who wants what, the facts \
             stated and what was decided. Write only the summary.",
        ),
        ChatMessage::new(Role::User, prompt),
    ];
    let out = llm_task::run(state, &model, messages_in, None, 256).await?;
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
    let mut record = embed_records(state, vec![record]).await?;
    let record = record
        .pop()
        .ok_or_else(|| ApiError::internal("no summary built"))?;
    let stored = memory.insert(Store::Summaries, record).await?;
    Ok(Some(stored))
}

/// Starts the background summarizer: conversations are summarized one at a time, each once
/// however many times it was reported while waiting.
pub fn start(state: &AppState) {
    let (sender, mut due) = tokio::sync::mpsc::unbounded_channel::<String>();
    if state.summaries_due().set(sender).is_err() {
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
                    tracing::warn!(%conversation, error = %e.to_json(), "could not summarize a conversation");
                }
            }
        }
    });
}

/// Summarize a conversation now (the background summarizer does it every
/// `memory.summarize_after` messages).
#[utoipa::path(
    post,
    path = "/v1/memory/conversations/{conversation}/summarize",
    tag = "memory",
    params(("conversation" = String, Path, description = "The conversation id")),
    responses((status = 200, description = "The summary record", body = RecordObject), (status = 404, body = ErrorBody))
)]
pub async fn summarize_now(
    State(state): State<AppState>,
    Path(conversation): Path<String>,
) -> Result<Json<RecordObject>, ApiError> {
    match summarize(&state, &conversation, true).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::not_found(
            "conversation_not_found",
            "conversation",
            format!("conversation `{conversation}` has no messages"),
        )),
    }
}
