//! Stored responses: each kept in the memory's `meta` store under `response:{id}`, with the
//! conversation up to and including it (as input items), so `previous_response_id` continues it
//! and `GET /v1/responses/{id}` reads it back.

use serde_json::{json, Value};
use tabagent_memory::{MemoryApi, NewRecord, Record, Store};

use super::super::error::ApiError;
use super::items;
use crate::state::AppState;

fn key(id: &str) -> String {
    format!("response:{id}")
}

/// A response to keep once it is complete.
pub struct Keep {
    pub state: AppState,
    /// The conversation it answers: the stored turns and the request's items.
    pub conversation: Vec<Value>,
}

impl Keep {
    /// Writes the response `id` with its `output`; acknowledged only once written.
    pub async fn put(self, id: &str, output: &[Value], response: &Value) -> Result<(), ApiError> {
        let memory = self
            .state
            .memory()
            .ok_or_else(|| ApiError::internal("the memory went away"))?;
        let mut conversation = self.conversation;
        conversation.extend(items::as_input(output));
        let text = output
            .iter()
            .filter_map(|item| item.pointer("/content/0/text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        memory
            .insert(
                Store::Meta,
                NewRecord {
                    kind: Some("response".to_string()),
                    text,
                    key: Some(key(id)),
                    data: json!({"response": response, "conversation": conversation}),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }
}

async fn record(state: &AppState, id: &str, param: &str) -> Result<Record, ApiError> {
    let memory = state.memory().ok_or_else(|| {
        ApiError::bad_request(
            Some(param),
            "this server's memory is off (memory.enabled = false), so it keeps no responses",
        )
    })?;
    memory
        .get_by_key(Store::Meta, key(id))
        .await?
        .filter(|r| r.kind == "response")
        .ok_or_else(|| {
            ApiError::not_found(
                "response_not_found",
                param,
                format!("no stored response has the id `{id}`"),
            )
        })
}

/// The conversation up to and including the response `id`.
pub async fn conversation(state: &AppState, id: &str) -> Result<Vec<Value>, ApiError> {
    let record = record(state, id, "previous_response_id").await?;
    Ok(record.data["conversation"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The response `id` as it was returned.
pub async fn response(state: &AppState, id: &str) -> Result<Value, ApiError> {
    Ok(record(state, id, "response_id").await?.data["response"].clone())
}

/// Forgets the response `id`.
pub async fn delete(state: &AppState, id: &str) -> Result<(), ApiError> {
    let record = record(state, id, "response_id").await?;
    let memory = state
        .memory()
        .ok_or_else(|| ApiError::internal("the memory went away"))?;
    memory.delete(record.id).await?;
    Ok(())
}
