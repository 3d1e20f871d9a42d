//! Sessions on the service's side: a request naming one gets the session's earlier turns
//! before its own, and its turns and the answer are kept once the answer is complete.

use tabagent_core::{ChatMessage, Role};
use tabagent_router::{Session, SessionMessage};

use crate::state::AppState;

/// A session a request names: its id as the client gave it, and where it is kept (scoped to
/// the caller).
#[derive(Debug, Clone)]
pub struct SessionRef {
    /// The id the client gave.
    pub id: String,
    /// The key it is kept under.
    pub key: String,
}

/// A session with the request's new turns added, kept once the answer is in.
pub struct Pending {
    pub key: String,
    pub session: Session,
}

impl Pending {
    /// Adds the answer to the session and keeps it.
    pub async fn keep(mut self, state: &AppState, answer: &str) {
        self.session.messages.push(SessionMessage {
            role: "assistant".to_string(),
            content: answer.to_string(),
        });
        state.cache().put_session(&self.key, self.session).await;
    }
}

/// Puts the session's earlier turns before `messages`; what to keep once the answer is in.
pub async fn join(
    state: &AppState,
    session: &SessionRef,
    messages: &mut Vec<ChatMessage>,
) -> Pending {
    let kept = state
        .cache()
        .session(&session.key)
        .await
        .unwrap_or_default();
    let new_turns = turns(messages);
    let mut joined = history(&kept);
    joined.append(messages);
    *messages = joined;
    let mut updated = kept;
    updated.messages.extend(new_turns);
    Pending {
        key: session.key.clone(),
        session: updated,
    }
}

/// A session's turns as a conversation.
pub fn history(session: &Session) -> Vec<ChatMessage> {
    session
        .messages
        .iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" => Role::System,
                "assistant" => Role::Assistant,
                _ => Role::User,
            };
            ChatMessage::new(role, m.content.clone())
        })
        .collect()
}

/// `turns` as session messages.
pub fn turns(messages: &[ChatMessage]) -> Vec<SessionMessage> {
    messages
        .iter()
        .map(|m| SessionMessage {
            role: m.role.as_str().to_string(),
            content: m.content.clone(),
        })
        .collect()
}
