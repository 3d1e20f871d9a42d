//! Server-side tools in `POST /v1/responses`: a request that lists tools of type `tabagent`
//! (or OpenAI's `code_interpreter` and `file_search`, which name `run_code` and
//! `document_search`) gets an agent run instead of one answer. tabagent runs the calls the
//! model makes and hands it their results until it answers; each call comes back as an
//! `mcp_call` output item (server label `tabagent`) with its output or error, streamed as
//! `response.mcp_call.*` events. `function` tools in the same request stay the client's: a
//! call of one ends the run as a `function_call` item, as without server tools.
//!
//! The server's `[agent]` configuration says which tools exist; a request picks among them
//! (`allowed_tools`) and is refused, naming the setting, if it asks for one that is not offered.
//! Similar past runs are shown to the model unless `agent.recall` is 0 or the `tabagent` tool
//! says `"recall": false`; the `x-tabagent-recalled-runs` header says how many were.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde_json::Value;
use tabagent_agent::agent::{
    self, AgentEnd, AgentEvent, Budget, GenerationStream, Model, ModelError,
};
use tabagent_agent::tools::Toolbox;
use tabagent_core::{ChatMessage, FinishReason, GenerationParams, InferenceError};
use tabagent_router::{Ticket, TraceParent};
use tokio::sync::mpsc;

use super::super::error::ApiError;
use super::store::Keep;
use super::stream::Writer;
use super::Echo;
use crate::agent::experience::{self, RunLog};
use crate::generation::{self, ChatJob};
use crate::state::AppState;

/// The response header that says how many similar past runs the model was shown.
pub const RECALLED_HEADER: &str = "x-tabagent-recalled-runs";

/// The label of the server's own tools in `mcp_call` items.
const BUILT_IN: &str = "tabagent";

/// The server's tools a request asks for, and whether it wants similar past runs recalled
/// (`"recall": false` on a `tabagent` tool turns it off; nothing turns it on past the
/// configuration).
pub struct Selected {
    pub toolbox: Toolbox,
    pub recall: bool,
}

/// The request's `tools`, split: the client's `function` tools (as sent), and the server's
/// tools it asks for (none: no agent run).
pub fn select(
    state: &AppState,
    wire: &[Value],
) -> Result<(Vec<Value>, Option<Selected>), ApiError> {
    let offered = crate::agent::toolbox(state);
    let names = offered.names();
    let mut functions = Vec::new();
    let mut wanted: Vec<String> = Vec::new();
    let mut agent = false;
    let mut recall = true;
    let require = |at: &str, name: &str, wanted: &mut Vec<String>| {
        if !names.iter().any(|n| n == name) {
            return Err(ApiError::bad_request(
                Some(at),
                crate::agent::why_not_offered(state, name),
            ));
        }
        wanted.push(name.to_string());
        Ok(())
    };
    for (index, tool) in wire.iter().enumerate() {
        let at = format!("tools[{index}]");
        match tool.get("type").and_then(Value::as_str).unwrap_or("function") {
            "function" => functions.push(tool.clone()),
            "tabagent" => {
                agent = true;
                match tool.get("recall") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(wanted)) => recall &= wanted,
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            Some(&format!("{at}.recall")),
                            "`recall` is true or false",
                        ))
                    }
                }
                match tool.get("allowed_tools") {
                    None | Some(Value::Null) => {
                        // The server's own tools; an MCP server's are asked for by its label.
                        let built_in: Vec<&String> = names
                            .iter()
                            .filter(|name| offered.server_label(name).is_none())
                            .collect();
                        if built_in.is_empty() {
                            return Err(ApiError::bad_request(
                                Some(&at),
                                "this server offers no tools: agent.tools is off and neither agent.allow_writes nor agent.allow_code is on",
                            ));
                        }
                        wanted.extend(built_in.into_iter().cloned());
                    }
                    Some(Value::Array(allowed)) => {
                        let at = format!("{at}.allowed_tools");
                        for name in allowed {
                            let name = name.as_str().ok_or_else(|| {
                                ApiError::bad_request(Some(&at), "`allowed_tools` lists tool names")
                            })?;
                            require(&at, name, &mut wanted)?;
                        }
                    }
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            Some(&format!("{at}.allowed_tools")),
                            "`allowed_tools` is a list of tool names",
                        ))
                    }
                }
            }
            "mcp" => {
                agent = true;
                if tool.get("server_url").is_some() || tool.get("connector_id").is_some() {
                    return Err(ApiError::bad_request(
                        Some(&at),
                        "a request cannot add MCP servers: name one configured in agent.mcp_servers by its `server_label`",
                    ));
                }
                let label = tool
                    .get("server_label")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let of_server: Vec<&String> = names
                    .iter()
                    .filter(|name| offered.server_label(name).as_deref() == Some(label))
                    .collect();
                if !state.agent_kit().mcp_labels().any(|l| l == label) {
                    return Err(ApiError::bad_request(
                        Some(&format!("{at}.server_label")),
                        format!("no MCP server labelled `{label}` is connected: configure it in agent.mcp_servers (the server log says why one could not be reached)"),
                    ));
                }
                // OpenAI's shapes: a list of names, or `{"tool_names": [...]}`.
                let allowed = match tool.get("allowed_tools") {
                    Some(Value::Object(filter)) => filter.get("tool_names"),
                    other => other,
                };
                match allowed {
                    None | Some(Value::Null) => wanted.extend(of_server.into_iter().cloned()),
                    Some(Value::Array(allowed)) => {
                        let at = format!("{at}.allowed_tools");
                        for name in allowed {
                            match name.as_str() {
                                Some(name) if of_server.iter().any(|n| *n == name) => {
                                    wanted.push(name.to_string())
                                }
                                _ => {
                                    return Err(ApiError::bad_request(
                                        Some(&at),
                                        format!("the MCP server `{label}` offers no tool {name}; it offers {}", of_server.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")),
                                    ))
                                }
                            }
                        }
                    }
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            Some(&format!("{at}.allowed_tools")),
                            "`allowed_tools` is a list of tool names",
                        ))
                    }
                }
            }
            "code_interpreter" => {
                agent = true;
                require(&at, "run_code", &mut wanted)?;
            }
            "file_search" => {
                agent = true;
                require(&at, "document_search", &mut wanted)?;
            }
            other => {
                return Err(ApiError::bad_request(
                    Some(&format!("{at}.type")),
                    format!("tools of type `{other}` are not supported; send `function` tools, or `tabagent` (with `allowed_tools`), `mcp` (a configured `server_label`), `code_interpreter` or `file_search` for the server's tools"),
                ))
            }
        }
    }
    Ok((
        functions,
        agent.then(|| Selected {
            toolbox: offered.narrowed(&wanted),
            recall,
        }),
    ))
}

/// A model's step that the generation service refused, as the API answers it.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message())]
struct StepRefused(ApiError);

fn api_error(error: &ModelError) -> ApiError {
    if let Some(StepRefused(error)) = error.downcast_ref() {
        return error.clone();
    }
    if let Some(error) = error.downcast_ref::<InferenceError>() {
        return error.clone().into();
    }
    ApiError::internal(error)
}

/// The generation service as the run's model: each step a `ChatJob` for the model named, so a
/// run goes wherever a chat request would, through the same scheduler gates.
struct ServiceModel {
    state: AppState,
    model: String,
    ticket: Ticket,
    trace: Option<TraceParent>,
}

impl Model for ServiceModel {
    fn generate(
        &self,
        messages: Vec<ChatMessage>,
        params: GenerationParams,
    ) -> Pin<Box<dyn Future<Output = Result<GenerationStream, ModelError>> + Send + '_>> {
        Box::pin(async move {
            let mut job = ChatJob::chat(self.model.clone(), messages, params, self.ticket.clone());
            job.trace.clone_from(&self.trace);
            // Each step's prompt holds the results so far: the caches would only fill up.
            job.cacheable = false;
            let generation = generation::generate(&self.state, job)
                .await
                .map_err(|e| Arc::new(StepRefused(e.into())) as ModelError)?;
            Ok(Box::pin(generation.events) as GenerationStream)
        })
    }
}

/// An agent run as the handler starts it.
pub struct AgentRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub params: GenerationParams,
    pub tools: Selected,
    pub ticket: Ticket,
    pub trace: Option<TraceParent>,
    /// OpenAI's `max_tool_calls`: at most this many calls, so one more step.
    pub max_tool_calls: Option<usize>,
    pub echo: Echo,
    pub keep: Option<Keep>,
    pub stream: bool,
}

/// Runs the agent and answers: the whole response, or its events as they happen.
pub async fn respond(state: &AppState, request: AgentRequest) -> Result<Response, ApiError> {
    let settings = &state.config().agent;
    let messages = request.messages;
    let recall = settings.recall > 0 && request.tools.recall;
    let task = experience::Task::of(state, &messages, recall || settings.record).await;
    let mut recalled = 0;
    let mut notes = None;
    if recall {
        match experience::recall(state, &task, settings.recall).await {
            Ok(Some((count, text))) => {
                notes = Some(text);
                recalled = count;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "past runs could not be recalled"),
        }
    }
    // How many past runs the model was shown, for clients that want to know.
    let recalled = [(RECALLED_HEADER, recalled.to_string())];
    let mut params = request.params;
    let budget = Budget {
        max_steps: request.max_tool_calls.map_or(settings.max_steps, |calls| {
            (calls + 1).min(settings.max_steps)
        }),
        max_tokens: params
            .max_tokens
            .map_or(settings.max_tokens, |n| n.min(settings.max_tokens)),
        max_step_tokens: Some(settings.max_step_tokens.max(1)),
        notes,
    };
    params.max_tokens = None;
    let model = Arc::new(ServiceModel {
        state: state.clone(),
        model: request.model.clone(),
        ticket: request.ticket,
        trace: request.trace,
    });
    let labels = request
        .tools
        .toolbox
        .names()
        .into_iter()
        .filter_map(|name| {
            let label = request.tools.toolbox.server_label(&name)?;
            Some((name, label))
        })
        .collect();
    let mut events = agent::start(model, request.tools.toolbox, messages, params, budget);
    let mut run = Run {
        labels,
        writer: Writer::new(request.echo, request.keep),
        log: RunLog::default(),
        state: state.clone(),
        model: request.model,
        task,
        failed: None,
    };
    // A step refused before anything ran (an unknown model, a full queue) is the request's
    // error, with its status, streamed or not.
    let first = loop {
        match events.recv().await {
            Some(AgentEvent::Step(_)) => continue,
            Some(AgentEvent::Failed(error)) => return Err(api_error(&error)),
            Some(event) => break event,
            None => return Err(ApiError::internal("the agent stopped without an end")),
        }
    };
    let ended = run.see(first).await;
    if request.stream {
        return Ok((recalled, Sse::new(sse(events, run, ended))).into_response());
    }
    let mut ended = ended;
    while !ended {
        ended = match events.recv().await {
            Some(event) => run.see(event).await,
            None => return Err(ApiError::internal("the agent stopped without an end")),
        };
    }
    match (run.failed, run.writer.last) {
        (Some(error), _) => Err(error),
        (None, Some(response)) => Ok((recalled, Json(response)).into_response()),
        (None, None) => Err(ApiError::internal("the agent ended without a response")),
    }
}

/// The run's events as server-sent events.
fn sse(
    events: mpsc::Receiver<AgentEvent>,
    run: Run,
    ended: bool,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (events, run, ended),
        |(mut events, mut run, mut ended)| async move {
            loop {
                if let Some(event) = run.writer.pop() {
                    return Some((event, (events, run, ended)));
                }
                if ended {
                    return None;
                }
                ended = match events.recv().await {
                    Some(event) => run.see(event).await,
                    None => {
                        run.fail(ApiError::internal("the agent stopped without an end"));
                        true
                    }
                };
            }
        },
    )
    .map(Ok)
}

/// A run being written out.
struct Run {
    /// The MCP server of each tool that has one.
    labels: std::collections::HashMap<String, String>,
    writer: Writer,
    log: RunLog,
    state: AppState,
    model: String,
    task: experience::Task,
    failed: Option<ApiError>,
}

impl Run {
    /// Writes `event`; true once the run is over.
    async fn see(&mut self, event: AgentEvent) -> bool {
        self.log.see(&event);
        match event {
            AgentEvent::Step(_) => self.writer.close(),
            AgentEvent::Text(text) => self.writer.text(&text),
            AgentEvent::ToolCall(call) => {
                let label = self.label(&call.name).to_string();
                self.writer.server_call(&call, &label);
            }
            AgentEvent::ToolOutput { name, output, .. } => {
                let output = output.map_err(|e| e.to_string());
                let label = self.label(&name).to_string();
                self.writer.server_output(&label, &output);
            }
            AgentEvent::Finished(outcome) => {
                self.writer.client_calls(&outcome.client_calls);
                if self.state.config().agent.record {
                    let id = self.writer.id().to_string();
                    if let Err(error) = experience::record(
                        &self.state,
                        &id,
                        &self.model,
                        &self.task,
                        &self.log,
                        &outcome,
                    )
                    .await
                    {
                        tracing::warn!(%error, response = id, "the agent run could not be recorded");
                    }
                }
                let reason = match outcome.end {
                    AgentEnd::TokenBudget => FinishReason::Length,
                    AgentEnd::ClientCall => FinishReason::ToolCalls,
                    AgentEnd::Answered | AgentEnd::StepBudget => FinishReason::Stop,
                };
                self.writer.finish(reason, outcome.usage).await;
                return true;
            }
            AgentEvent::Failed(error) => {
                self.fail(api_error(&error));
                return true;
            }
        }
        false
    }

    fn label(&self, tool: &str) -> &str {
        self.labels.get(tool).map_or(BUILT_IN, String::as_str)
    }

    fn fail(&mut self, error: ApiError) {
        self.writer.close();
        self.writer.failed(&error);
        self.failed = Some(error);
    }
}
