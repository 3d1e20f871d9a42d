//! Chat turn events: each answered chat request, as `chat.turn` on `<prefix>:chat`.

use serde_json::{json, Value};
use tabagent_core::{ChatMessage, Role};

use super::{Events, Stream};
use crate::generation::events::Answer;

/// A chat request's turn, kept until its answer is complete.
pub struct ChatTurn {
    events: Events,
    /// The messages after the last assistant message (the turn the answer replies to).
    messages: Vec<Value>,
}

impl ChatTurn {
    /// The turn of a request with `messages`, taken before any context is added to them.
    pub fn new(events: &Events, messages: &[ChatMessage]) -> Self {
        let start = messages
            .iter()
            .rposition(|m| m.role == Role::Assistant)
            .map_or(0, |i| i + 1);
        let with_text = events.settings().chat_text;
        let messages = messages[start..]
            .iter()
            .map(|m| match with_text {
                true => json!({"role": m.role.as_str(), "content": m.content}),
                false => json!({"role": m.role.as_str(), "chars": m.content.chars().count()}),
            })
            .collect();
        Self {
            events: events.clone(),
            messages,
        }
    }

    /// Publishes the turn with its answer.
    pub async fn answered(
        self,
        model: &str,
        provider: &str,
        conversation: Option<&str>,
        answer: &Answer,
    ) {
        let reply = match self.events.settings().chat_text {
            true => json!(answer.text),
            false => Value::Null,
        };
        let data = json!({
            "model": model,
            "provider": provider,
            "conversation": conversation,
            "messages": self.messages,
            "reply": reply,
            "finish_reason": answer.reason.as_str(),
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
        });
        self.events.publish(Stream::Chat, "chat.turn", data).await;
    }
}
