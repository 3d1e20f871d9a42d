//! The agent loop: the model answers or calls tools; tabagent runs the calls and hands the
//! results back; until the model answers without a call, or a step or token budget runs out.
//! Every step is reported as an [`AgentEvent`] while it happens; dropping the receiver cancels
//! the run (the generation under way is dropped with it, which stops it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt as _};
use tabagent_core::{
    ChatMessage, FinishReason, GenerationEvent, GenerationParams, Role, ToolCall,
    ToolCallAssembler, ToolChoice, Usage,
};
use tokio::sync::mpsc;

use crate::tools::{ToolError, Toolbox};

/// What the model is told when the conversation has no system message of its own: small
/// models otherwise call a tool again on its own result instead of answering.
pub const INSTRUCTIONS: &str = "You are a helpful assistant that can call tools. Call a tool \
only when you need a fact or a computation you do not have. When a tool has answered, use its \
result to answer the user directly in plain text; do not call the same tool again with the \
same arguments.";

/// What the answer step is told when the conversation has no system message of its own.
pub const ANSWER_INSTRUCTIONS: &str = "You are a helpful assistant. Answer the user's request in plain text, using the tool results you are given. Do not write JSON and do not call tools.";

/// A generation's events, ending in one `Finished` or `Failed`.
pub type GenerationStream = Pin<Box<dyn Stream<Item = GenerationEvent> + Send>>;

/// Why the model could not generate: the model's own error, for the caller to look into (a
/// server maps its errors to statuses).
pub type ModelError = Arc<dyn std::error::Error + Send + Sync>;

/// What the agent generates with: a local engine or the server's generation service.
pub trait Model: Send + Sync {
    /// Starts a generation of the next assistant turn.
    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
    ) -> Pin<Box<dyn Future<Output = Result<GenerationStream, ModelError>> + Send + '_>>;
}

/// How far one run may go, and what the model is told besides the conversation.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Model turns at most (the last is offered no tools, so that it answers).
    pub max_steps: usize,
    /// Tokens the model may generate over the whole run.
    pub max_tokens: u32,
    /// Tokens one model turn may generate (a small model can write the same call over and over
    /// until it is stopped).
    pub max_step_tokens: Option<u32>,
    /// Notes for the planning steps (what similar past runs did), added to the system
    /// message; the answer step is not shown them.
    pub notes: Option<String>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps: 8,
            max_tokens: 4096,
            max_step_tokens: None,
            notes: None,
        }
    }
}

/// Something that happened in a run, as it happens.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// Model turn `step` (1, 2, ...) begins.
    Step(usize),
    /// More of the model's text in this step.
    Text(String),
    /// The model called a tool (whole, once its arguments are complete).
    ToolCall(ToolCall),
    /// A tool's result, as the model is given it.
    ToolOutput {
        /// The call it answers.
        call_id: String,
        /// The tool.
        name: String,
        /// Its output or error.
        output: Result<String, ToolError>,
        /// Whether the output was cut to the cap.
        truncated: bool,
        /// How long it took.
        elapsed: Duration,
    },
    /// The run ended; nothing follows.
    Finished(AgentOutcome),
    /// The run failed (the model could not generate); nothing follows.
    Failed(ModelError),
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEnd {
    /// The model answered without calling a tool.
    Answered,
    /// The last step ended and the model still wanted tools.
    StepBudget,
    /// The run generated its token budget.
    TokenBudget,
    /// The model called one of the caller's own tools (in [`AgentOutcome::client_calls`]):
    /// the caller runs it and continues the conversation with its result.
    ClientCall,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct AgentOutcome {
    /// The final answer (the last step's text).
    pub answer: String,
    /// Why it ended.
    pub end: AgentEnd,
    /// Model turns taken.
    pub steps: usize,
    /// Tool calls made.
    pub tool_calls: usize,
    /// Tokens over all steps.
    pub usage: Usage,
    /// The calls of the caller's own tools the run ended on (with [`AgentEnd::ClientCall`]).
    pub client_calls: Vec<ToolCall>,
    /// The whole conversation, tool turns included.
    pub transcript: Vec<ChatMessage>,
    /// From start to end.
    pub elapsed: Duration,
}

/// Starts a run over `messages` with `toolbox`'s tools; its events arrive on the receiver.
///
/// Tools already in `params.tools.specs` are the caller's own: the model is offered them
/// beside the toolbox's, and a call of one ends the run ([`AgentEnd::ClientCall`]) for the
/// caller to answer. `ToolChoice::None` in `params` offers no tools at all.
pub fn start(
    model: Arc<dyn Model>,
    toolbox: Toolbox,
    messages: Vec<ChatMessage>,
    params: GenerationParams,
    budget: Budget,
) -> mpsc::Receiver<AgentEvent> {
    let (events, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let outcome = run(&*model, &toolbox, messages, params, budget, &events).await;
        let last = match outcome {
            Ok(Some(outcome)) => AgentEvent::Finished(outcome),
            Ok(None) => return, // the receiver went away: cancelled
            Err(error) => AgentEvent::Failed(error),
        };
        let _ = events.send(last).await;
    });
    receiver
}

/// The loop. `Ok(None)` when the receiver went away.
async fn run(
    model: &dyn Model,
    toolbox: &Toolbox,
    mut messages: Vec<ChatMessage>,
    mut params: GenerationParams,
    budget: Budget,
    events: &mpsc::Sender<AgentEvent>,
) -> Result<Option<AgentOutcome>, ModelError> {
    let started = Instant::now();
    // The request as given, with the answer step's instructions when it has none of its own:
    // what the answer step is given, with the results.
    let mut task = messages.clone();
    match messages.iter_mut().find(|m| m.role == Role::System) {
        Some(system) => {
            if let Some(notes) = &budget.notes {
                system.content = format!("{}\n\n{notes}", system.content);
            }
        }
        None => {
            let instructions = match &budget.notes {
                Some(notes) => format!("{INSTRUCTIONS}\n\n{notes}"),
                None => INSTRUCTIONS.to_string(),
            };
            messages.insert(0, ChatMessage::new(Role::System, instructions));
            task.insert(0, ChatMessage::new(Role::System, ANSWER_INSTRUCTIONS));
        }
    }
    let client_specs = std::mem::take(&mut params.tools.specs);
    let tools_allowed = params.tools.choice != ToolChoice::None;
    let mut usage = Usage::default();
    let mut tool_calls = 0;
    // Calls already made, as (name, arguments), the conversation's own included (a client's
    // tool answered in an earlier turn): a step that only repeats them is not run, and the
    // next step is the answer step.
    let mut made: Vec<(String, String)> = messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| (c.name.clone(), canonical(&c.arguments)))
        .collect();
    let mut only_repeats = false;
    // Each call with its result in a line, for the answer step.
    let mut results: Vec<String> = Vec::new();
    let max_steps = budget.max_steps.max(1);
    for step in 1..=max_steps {
        if events.send(AgentEvent::Step(step)).await.is_err() {
            return Ok(None);
        }
        let answer_step = step == max_steps || only_repeats;
        params.tools.specs = client_specs.clone();
        params.tools.specs.extend(
            toolbox
                .specs()
                .into_iter()
                .filter(|spec| !client_specs.iter().any(|c| c.name == spec.name)),
        );
        params.tools.choice = match answer_step || !tools_allowed || params.tools.specs.is_empty() {
            true => ToolChoice::None,
            false => ToolChoice::Auto,
        };
        let left = budget.max_tokens.saturating_sub(usage.completion_tokens);
        let left = budget.max_step_tokens.map_or(left, |step| step.min(left));
        params.max_tokens = Some(params.max_tokens.map_or(left, |m| m.min(left)));
        // The answer step, after tools ran: the request and the results in plain text, no
        // tools. Small models, shown their own tool turns again, keep calling tools (or write
        // call-shaped text); given the results as text they answer.
        let prompt = match answer_step && !results.is_empty() {
            true => {
                params.tools.specs.clear();
                with_results(&task, &results)
            }
            false => messages.clone(),
        };
        let mut generation = model.generate(prompt, params.clone()).await?;
        let mut text = String::new();
        // Text that may be a call written as JSON text is held back until the step ends: a
        // call (or a repeat, which is dropped) must not reach the caller as part of the answer.
        let mut held = String::new();
        let may_be_call = params.tools.choice != ToolChoice::None;
        let mut calls = ToolCallAssembler::default();
        let reason = loop {
            match generation.next().await {
                Some(GenerationEvent::Text(piece)) => {
                    text.push_str(&piece);
                    if may_be_call && looks_like_call_text(&text) {
                        held.push_str(&piece);
                        continue;
                    }
                    let piece = std::mem::take(&mut held) + &piece;
                    if events.send(AgentEvent::Text(piece)).await.is_err() {
                        return Ok(None);
                    }
                }
                // One call a step: once a second begins, the first is whole; the generation is
                // dropped (which stops it), so that a small model does not spend its budget
                // writing the same call over and over. The next step sees the first's result.
                Some(GenerationEvent::ToolCall(delta)) if delta.index >= 1 => {
                    break FinishReason::ToolCalls;
                }
                Some(GenerationEvent::ToolCall(delta)) => calls.push(&delta),
                Some(GenerationEvent::Finished {
                    reason,
                    usage: used,
                }) => {
                    usage.prompt_tokens += used.prompt_tokens;
                    usage.completion_tokens += used.completion_tokens;
                    break reason;
                }
                Some(GenerationEvent::Failed(error)) => return Err(Arc::new(error)),
                Some(GenerationEvent::Logprobs(_) | GenerationEvent::Refusal(_)) => {}
                None => return Err(Arc::new(Stopped)),
            }
        };
        let mut calls = calls.finish();
        // A small model sometimes writes a call as plain JSON text instead of calling: taken as
        // the call it is, so that a wrong name gets an error back and the model another try.
        if calls.is_empty() && !answer_step && params.tools.choice != ToolChoice::None {
            calls.extend(call_in_text(&text, step));
        }
        only_repeats = !calls.is_empty()
            && calls
                .iter()
                .all(|c| made.contains(&(c.name.clone(), canonical(&c.arguments))));
        // Held text that called nothing was the model's text after all.
        if calls.is_empty()
            && !held.is_empty()
            && events.send(AgentEvent::Text(held)).await.is_err()
        {
            return Ok(None);
        }
        // A step that only repeats calls already made is not run again: the next step is the
        // answer step, given the results the calls already had.
        if only_repeats && !answer_step {
            continue;
        }
        made.extend(
            calls
                .iter()
                .map(|c| (c.name.clone(), canonical(&c.arguments))),
        );
        messages.push(ChatMessage {
            tool_calls: calls.clone(),
            ..ChatMessage::new(Role::Assistant, text.clone())
        });
        let finished = |end, tool_calls, client_calls, transcript: &[ChatMessage]| AgentOutcome {
            answer: text.clone(),
            end,
            steps: step,
            tool_calls,
            client_calls,
            usage,
            transcript: transcript.to_vec(),
            elapsed: started.elapsed(),
        };
        // A call of the caller's own tool ends the run: the caller answers it.
        let for_client: Vec<ToolCall> = calls
            .iter()
            .filter(|c| client_specs.iter().any(|s| s.name == c.name))
            .cloned()
            .collect();
        if !for_client.is_empty() {
            return Ok(Some(finished(
                AgentEnd::ClientCall,
                tool_calls,
                for_client,
                &messages,
            )));
        }
        if answer_step || calls.is_empty() {
            let end = match reason {
                _ if answer_step && step == max_steps && !only_repeats => AgentEnd::StepBudget,
                FinishReason::Length if usage.completion_tokens >= budget.max_tokens => {
                    AgentEnd::TokenBudget
                }
                _ => AgentEnd::Answered,
            };
            return Ok(Some(finished(end, tool_calls, Vec::new(), &messages)));
        }
        for call in calls {
            tool_calls += 1;
            if events
                .send(AgentEvent::ToolCall(call.clone()))
                .await
                .is_err()
            {
                return Ok(None);
            }
            let arguments = match call.arguments.trim() {
                "" => Ok(serde_json::json!({})),
                written => serde_json::from_str(written),
            };
            let called = match arguments {
                // A run cancelled during a call stops the call (a sandbox is killed, an MCP
                // server told) rather than waiting for it.
                Ok(arguments) => tokio::select! {
                    called = toolbox.call(&call.name, arguments) => called,
                    () = events.closed() => return Ok(None),
                },
                Err(e) => crate::tools::Called {
                    output: Err(ToolError::InvalidArguments(format!(
                        "the arguments are not JSON: {e}"
                    ))),
                    truncated: false,
                    elapsed: Duration::ZERO,
                },
            };
            let content = match &called.output {
                Ok(text) => text.clone(),
                Err(error @ ToolError::UnknownTool(_)) => {
                    format!(
                        "error: {error}; the tools are: {}",
                        toolbox.names().join(", ")
                    )
                }
                Err(error) => format!("error: {error}"),
            };
            results.push(format!(
                "- {}({}) returned: {content}",
                call.name, call.arguments
            ));
            messages.push(ChatMessage {
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                ..ChatMessage::new(Role::Tool, content)
            });
            let output = AgentEvent::ToolOutput {
                call_id: call.id,
                name: call.name,
                output: called.output,
                truncated: called.truncated,
                elapsed: called.elapsed,
            };
            if events.send(output).await.is_err() {
                return Ok(None);
            }
        }
        if usage.completion_tokens >= budget.max_tokens {
            return Ok(Some(finished(
                AgentEnd::TokenBudget,
                tool_calls,
                Vec::new(),
                &messages,
            )));
        }
    }
    // The last step is an answer step, which always returns above.
    unreachable!("the last step is an answer step, which returns")
}

/// The model's events ended without a `Finished`.
#[derive(Debug, thiserror::Error)]
#[error("the model stopped without finishing its answer")]
struct Stopped;

/// The call a step's whole text spells as JSON (`{"name": ..., "arguments": {...}}`, perhaps
/// in a code fence), if it does.
fn call_in_text(text: &str, step: usize) -> Option<ToolCall> {
    let body = text.trim();
    let body = body
        .strip_prefix("```json")
        .or_else(|| body.strip_prefix("```"))
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or(body)
        .trim();
    // The whole text, or else its first line (a model may write several calls, one a line);
    // each as written, or with the raw line breaks a model leaves inside strings (code)
    // escaped.
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .or_else(|_| serde_json::from_str(&escaped_in_strings(text)))
            .ok()
    };
    let value = parse(body).or_else(|| parse(body.lines().next()?.trim()))?;
    let name = value.get("name")?.as_str()?.trim();
    let arguments = value.get("arguments").or_else(|| value.get("parameters"))?;
    (!name.is_empty() && arguments.is_object()).then(|| ToolCall {
        id: format!("call_text{step}"),
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}

/// Whether a step's text so far could be a call written as JSON text (an object, or a fenced
/// JSON block): such text is held back until the step ends.
fn looks_like_call_text(text: &str) -> bool {
    let start = text.trim_start();
    start.starts_with('{')
        || start.starts_with("```json")
        || (start.len() < 7 && "```json".starts_with(start))
}

/// `text` with the raw control characters inside its JSON strings escaped.
fn escaped_in_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaping) = (false, false);
    for c in text.chars() {
        match c {
            _ if escaping => {
                escaping = false;
                out.push(c);
            }
            '\\' if in_string => {
                escaping = true;
                out.push(c);
            }
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '\n' if in_string => out.push_str("\\n"),
            '\t' if in_string => out.push_str("\\t"),
            '\r' if in_string => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// The request, then a user turn with the tool results, asking for the answer.
fn with_results(task: &[ChatMessage], results: &[String]) -> Vec<ChatMessage> {
    let mut messages = task.to_vec();
    messages.push(ChatMessage::new(
        Role::User,
        format!(
            "Tools were called for you and returned:\n{}\n\nUsing these results, answer the \
             request above directly, in plain text.",
            results.join("\n")
        ),
    ));
    messages
}

/// Arguments compared by value: the same JSON written with other spacing or key order is the
/// same call.
fn canonical(arguments: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(value) => sorted(value).to_string(),
        Err(_) => arguments.trim().to_string(),
    }
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn text_that_may_be_a_call_is_told_from_an_answer() {
        for held in [
            "",
            " ",
            "{",
            "  {\"name\"",
            "`",
            "```",
            "```js",
            "```json\n{",
        ] {
            assert!(looks_like_call_text(held), "{held:?}");
        }
        for streamed in [
            "The",
            "1234 * 5678",
            "```python\nprint(1)",
            "Sure: {\"a\": 1}",
        ] {
            assert!(!looks_like_call_text(streamed), "{streamed:?}");
        }
    }

    #[test]
    fn a_call_written_as_text_is_read_as_a_call() {
        let call = call_in_text(
            "```json\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2*3\"}}\n```",
            2,
        )
        .unwrap();
        assert_eq!(call.name, "calculator");
        assert_eq!(call.arguments, r#"{"expression":"2*3"}"#);
        assert!(call_in_text("The answer is 6.", 1).is_none());
        let first = call_in_text(
            "{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}}",
            1,
        )
        .unwrap();
        assert_eq!(first.name, "a");
        // Code with raw line breaks in its string, as small models write it.
        let code = call_in_text(
            "{\"name\": \"run_code\", \"arguments\": {\"code\": \"x = 2\nprint(x)\"}}",
            1,
        )
        .unwrap();
        assert_eq!(code.arguments, r#"{"code":"x = 2\nprint(x)"}"#);
        assert!(call_in_text(r#"{"name": "x"}"#, 1).is_none());
        assert!(call_in_text(r#"{"name": "", "arguments": {}}"#, 1).is_none());
    }
}
