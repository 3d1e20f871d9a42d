//! Work the server gives a language model on its own account (extracting a knowledge graph,
//! summarizing a conversation), as opposed to a caller's chat request. It goes through the same
//! service as a caller's, in the batch class, so it waits behind interactive requests and never
//! runs past the scheduler's limits.

use tabagent_core::{ChatMessage, GenerationParams, OutputConstraint, SamplingParams};
use tabagent_router::{Priority, Ticket};

use super::{collect, generate, ChatJob, Collected};
use crate::error::ServiceError;
use crate::state::AppState;

/// The caller the server's own work is counted as.
pub const CALLER: &str = "tabagent";

/// The model for memory's own work: the one named, else `memory.llm`, else the default model.
pub fn model(state: &AppState, named: Option<String>) -> String {
    named
        .or_else(|| state.config().memory.llm.clone())
        .unwrap_or_else(|| state.config().models.default.clone())
}

/// Runs `messages` to the end on `model`, greedily, the output held to `schema` when given.
pub async fn run(
    state: &AppState,
    model: &str,
    messages: Vec<ChatMessage>,
    schema: Option<serde_json::Value>,
    max_tokens: u32,
) -> Result<Collected, ServiceError> {
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: Some(max_tokens),
        constraint: schema.map_or(OutputConstraint::None, OutputConstraint::JsonSchema),
        ..Default::default()
    };
    let ticket = Ticket {
        priority: Priority::Batch,
        ..Ticket::new(CALLER)
    };
    let mut job = ChatJob::chat(model, messages, params, ticket);
    job.cacheable = false;
    let generation = generate(state, job).await?;
    collect(generation.events).await
}
