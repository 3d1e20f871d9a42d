//! Recording an exchange in a conversation: a request that names a conversation (and a server
//! whose memory is on) has its new turn and the reply written to the conversations store once
//! the reply is complete; the summarizer is told the conversation grew.

use serde_json::json;
use tabagent_core::{ChatMessage, FinishReason, Role, Usage};
use tabagent_memory::{Change, MemoryApi, NewRecord, Store};

use crate::error::ServiceError;
use crate::memory_backend::MemoryBackend;
use crate::state::AppState;

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
    ) -> Result<(), ServiceError> {
        let message = |role: Role, text: String, data| NewRecord {
            kind: Some("message".to_string()),
            text,
            role: Some(role.as_str().to_string()),
            conversation: Some(self.conversation.clone()),
            data,
            ..Default::default()
        };
        let said: Vec<String> = self
            .turn
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .collect();
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
        let records = crate::embedding::records(state, records).await?;
        let changes = records
            .into_iter()
            .map(|record| Change::Insert {
                store: Store::Conversations,
                record,
            })
            .collect();
        self.memory.apply(changes).await?;
        crate::surprise::remember_turn(state, &self.conversation, said);
        if state.config().memory.summarize_after > 0 {
            state.summary_due(self.conversation);
        }
        Ok(())
    }
}
