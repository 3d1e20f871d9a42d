//! Work the server gives the language model on its own account (extracting a knowledge graph,
//! summarizing a conversation), as opposed to a caller's chat request.

use tabagent_core::{ChatMessage, GenerationParams, OutputConstraint, SamplingParams};

use super::error::ApiError;
use super::generate::{self, Collected};
use crate::state::AppState;

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
) -> Result<Collected, ApiError> {
    let acquired = state.registry().acquire(model, None).await?;
    let engine = acquired.engine.llama(&acquired.id)?;
    let params = GenerationParams {
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: Some(max_tokens),
        constraint: schema.map_or(OutputConstraint::None, OutputConstraint::JsonSchema),
        ..Default::default()
    };
    let handle = generate::submit(&engine, move |engine| engine.chat(&messages, params)).await?;
    generate::collect(handle, generate::Watch::none()).await
}
