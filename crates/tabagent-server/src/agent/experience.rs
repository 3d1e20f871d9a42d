//! What agent runs leave behind and bring back: each run is recorded as one `experience`
//! record (the task, the calls in order with their timings, the answer and why it ended) and
//! each tool output as a `tool-results` record, in one transaction; before a run plans, the
//! most similar past runs that ended in an answer are shown to the model.

use std::time::Duration;

use serde_json::{json, Value};
use tabagent_agent::agent::{AgentEnd, AgentEvent, AgentOutcome};
use tabagent_memory::{
    Change, Embedding, Filter, MemoryApi as _, Mode, NewRecord, SearchRequest, Store,
};

use super::excerpt;
use crate::error::ServiceError;
use crate::state::AppState;

/// The record kind of a run in `experience`.
const RUN_KIND: &str = "agent_run";
/// The most of a tool output or an answer kept in the run's own record (the tool outputs are
/// kept whole, up to the tool cap, in `tool-results`).
const MAX_KEPT_CHARS: usize = 400;
/// The least cosine similarity at which a past run counts as similar, when there are vectors.
const MIN_SIMILARITY: f32 = 0.6;

/// One tool call as the run saw it.
struct Call {
    id: String,
    name: String,
    arguments: String,
    output: Option<Result<String, String>>,
    elapsed: Duration,
    truncated: bool,
}

/// A run's steps, gathered from its events.
#[derive(Default)]
pub struct RunLog {
    calls: Vec<Call>,
}

impl RunLog {
    /// Notes what `event` says.
    pub fn see(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::ToolCall(call) => self.calls.push(Call {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                output: None,
                elapsed: Duration::ZERO,
                truncated: false,
            }),
            AgentEvent::ToolOutput {
                call_id,
                output,
                truncated,
                elapsed,
                ..
            } => {
                if let Some(call) = self.calls.iter_mut().rev().find(|c| &c.id == call_id) {
                    call.output = Some(output.clone().map_err(|e| e.to_string()));
                    call.elapsed = *elapsed;
                    call.truncated = *truncated;
                }
            }
            _ => {}
        }
    }
}

fn end_name(end: AgentEnd) -> &'static str {
    match end {
        AgentEnd::Answered => "answered",
        AgentEnd::StepBudget => "step_budget",
        AgentEnd::TokenBudget => "token_budget",
        AgentEnd::ClientCall => "client_call",
    }
}

/// What a run was asked, and its vector (made once: recall searches with it, the record
/// keeps it).
pub struct Task {
    pub text: String,
    pub embedding: Option<Embedding>,
}

impl Task {
    /// The last user turn of `messages`, embedded when the memory has an embedding model
    /// and something will use the vector (a failure to embed is logged: the run goes on, its
    /// recall by keywords).
    pub async fn of(
        state: &AppState,
        messages: &[tabagent_core::ChatMessage],
        embed: bool,
    ) -> Task {
        let text = messages
            .iter()
            .rev()
            .find(|m| m.role == tabagent_core::Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let embedding = match embed && state.memory().is_some() && !text.trim().is_empty() {
            true => crate::embedding::one_for_memory(state, &text)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "the agent's task could not be embedded");
                    None
                }),
            false => None,
        };
        Task { text, embedding }
    }
}

/// The run, as the answer to response `id` made with `model`: written in one transaction.
pub async fn record(
    state: &AppState,
    id: &str,
    model: &str,
    task: &Task,
    log: &RunLog,
    outcome: &AgentOutcome,
) -> Result<(), ServiceError> {
    let Some(memory) = state.memory() else {
        return Ok(());
    };
    let embedding = task.embedding.clone();
    let task = task.text.as_str();
    let end = end_name(outcome.end);
    let mut changes = vec![Change::Insert {
        store: Store::Experience,
        record: NewRecord {
            kind: Some(RUN_KIND.into()),
            text: task.to_string(),
            data: json!({
                "response_id": id,
                "model": model,
                "task": task,
                "answer": outcome.answer,
                "end": end,
                "steps": outcome.steps,
                "elapsed_ms": outcome.elapsed.as_millis() as u64,
                "prompt_tokens": outcome.usage.prompt_tokens,
                "completion_tokens": outcome.usage.completion_tokens,
                "calls": log.calls.iter().map(|call| json!({
                    "name": call.name,
                    "arguments": call.arguments,
                    "ok": matches!(call.output, Some(Ok(_))),
                    "output": call.output.as_ref().map(|o| match o {
                        Ok(text) | Err(text) => excerpt(text, MAX_KEPT_CHARS),
                    }),
                    "ms": call.elapsed.as_millis() as u64,
                })).collect::<Vec<Value>>(),
            }),
            tags: vec!["agent".into(), end.into()],
            conversation: Some(id.to_string()),
            source: Some(format!("model:{model}")),
            key: Some(format!("run:{id}")),
            embedding,
            ..NewRecord::default()
        },
    }];
    for call in &log.calls {
        let Some(output) = &call.output else { continue };
        let (text, error) = match output {
            Ok(text) => (text.clone(), None),
            Err(error) => (String::new(), Some(error.clone())),
        };
        changes.push(Change::Insert {
            store: Store::ToolResults,
            record: NewRecord {
                kind: Some("tool_result".into()),
                text: format!(
                    "{}({}) → {}",
                    call.name,
                    call.arguments,
                    error.as_deref().unwrap_or(&text)
                ),
                data: json!({
                    "tool": call.name,
                    "call_id": call.id,
                    "arguments": call.arguments,
                    "output": text,
                    "error": error,
                    "truncated": call.truncated,
                    "ms": call.elapsed.as_millis() as u64,
                }),
                tags: vec![call.name.clone()],
                conversation: Some(id.to_string()),
                source: Some(format!("tool:{}", call.name)),
                role: Some("tool".into()),
                ..NewRecord::default()
            },
        });
    }
    memory.apply(changes).await?;
    if outcome.end == AgentEnd::Answered && !outcome.answer.trim().is_empty() {
        crate::surprise::remember_run(state, id, model, task, &outcome.answer);
    }
    Ok(())
}

/// Up to `limit` past runs similar to `task` that ended in an answer, as notes for the model,
/// and how many there are.
pub async fn recall(
    state: &AppState,
    task: &Task,
    limit: usize,
) -> Result<Option<(usize, String)>, ServiceError> {
    let Some(memory) = state.memory() else {
        return Ok(None);
    };
    if limit == 0 || task.text.trim().is_empty() {
        return Ok(None);
    }
    let vector = task.embedding.clone();
    let has_vector = vector.is_some();
    let found = memory
        .search(SearchRequest {
            text: Some(task.text.clone()),
            vector,
            filter: Filter {
                stores: vec![Store::Experience],
                kinds: vec![RUN_KIND.into()],
                tags: vec!["answered".into()],
                ..Filter::default()
            },
            mode: Mode::Hybrid,
            limit: limit * 2,
            offset: 0,
        })
        .await?;
    let notes: Vec<String> = found
        .hits
        .iter()
        .filter(|hit| match has_vector {
            true => hit.why.vector_score.is_some_and(|s| s >= MIN_SIMILARITY),
            false => hit.why.keyword_rank.is_some(),
        })
        .take(limit)
        .map(|hit| {
            let data = &hit.record.data;
            let calls: Vec<String> = data["calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    format!(
                        "{}({}) → {}",
                        c["name"].as_str().unwrap_or(""),
                        c["arguments"].as_str().unwrap_or(""),
                        excerpt(c["output"].as_str().unwrap_or(""), 120)
                    )
                })
                .collect();
            format!(
                "- Task: {}\n  Tools: {}\n  Answer: {}",
                excerpt(data["task"].as_str().unwrap_or(&hit.record.text), 300),
                match calls.is_empty() {
                    true => "none".to_string(),
                    false => calls.join("; "),
                },
                excerpt(data["answer"].as_str().unwrap_or(""), 300)
            )
        })
        .collect();
    Ok((!notes.is_empty()).then(|| {
        let text = format!(
            "Similar tasks you did before, for reference (their facts may be out of date; call \
             tools again when you need a fact):\n{}",
            notes.join("\n")
        );
        (notes.len(), text)
    }))
}
