//! Tools over the server's models, for MCP clients: `chat` (a local or routed model answers a
//! prompt) and `embed` (vectors for texts).

use serde::Deserialize;
use serde_json::{json, Value};
use tabagent_agent::tools::{arguments, Tool, ToolError, ToolFuture};
use tabagent_core::{ChatMessage, Role, ToolSpec};

use crate::state::AppState;

/// The most tokens one `chat` call generates, and the most texts one `embed` call takes.
const MAX_CHAT_TOKENS: u32 = 4096;
const MAX_EMBED_TEXTS: usize = 64;

fn failed(error: impl std::fmt::Display) -> ToolError {
    ToolError::Failed(error.to_string())
}

/// `chat`.
pub struct Chat(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatArgs {
    prompt: String,
    system: Option<String>,
    model: Option<String>,
    max_tokens: Option<u32>,
}

impl Tool for Chat {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "chat".into(),
            description: Some(
                "Ask a language model served by tabagent (on this machine, or routed) and get \
                 its answer."
                    .into(),
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "prompt": {"type": "string"},
                    "system": {"type": "string", "description": "A system prompt"},
                    "model": {"type": "string", "description": "A model as /v1/models names it (default: the server's default model)"},
                    "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_CHAT_TOKENS}
                },
                "required": ["prompt"]
            }),
            strict: false,
        }
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: ChatArgs = arguments(given)?;
            let mut messages = Vec::new();
            if let Some(system) = args.system {
                messages.push(ChatMessage::new(Role::System, system));
            }
            messages.push(ChatMessage::new(Role::User, args.prompt));
            let model = args
                .model
                .unwrap_or_else(|| self.0.config().models.default.clone());
            let max_tokens = args.max_tokens.unwrap_or(1024).clamp(1, MAX_CHAT_TOKENS);
            let answer = crate::generation::tasks::run(&self.0, &model, messages, None, max_tokens)
                .await
                .map_err(failed)?;
            Ok(answer.text)
        })
    }
}

/// `embed`.
pub struct Embed(pub AppState);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedArgs {
    texts: Vec<String>,
    model: Option<String>,
}

impl Tool for Embed {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "embed".into(),
            description: Some(
                "Embed texts with an embedding model served by tabagent; returns JSON: the model \
                 and one vector per text."
                    .into(),
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_EMBED_TEXTS},
                    "model": {"type": "string", "description": "Default: memory.embedding_model"}
                },
                "required": ["texts"]
            }),
            strict: false,
        }
    }

    fn call(&self, given: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let args: EmbedArgs = arguments(given)?;
            if args.texts.is_empty() || args.texts.len() > MAX_EMBED_TEXTS {
                return Err(ToolError::InvalidArguments(format!(
                    "`texts` holds 1 to {MAX_EMBED_TEXTS} texts"
                )));
            }
            let model = args
                .model
                .or_else(|| self.0.config().memory.embedding_model.clone())
                .ok_or_else(|| {
                    ToolError::InvalidArguments(
                        "name a `model`: this server has no memory.embedding_model".into(),
                    )
                })?;
            let (model, vectors) = crate::embedding::with_model(&self.0, &model, args.texts)
                .await
                .map_err(failed)?;
            Ok(json!({"model": model, "vectors": vectors}).to_string())
        })
    }
}
