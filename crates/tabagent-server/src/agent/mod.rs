//! Agents on the server: the tools a model may call in `/v1/responses` and how a run is made.
//!
//! What is offered is the configuration's (`[agent]`): the read-only tools unless
//! `agent.tools` is off, `memory_write` with `agent.allow_writes`, `run_code` with
//! `agent.allow_code`. A request picks among them and cannot add to them. Each run's model is
//! the generation service, so the loop runs over local and routed models alike; each run is
//! recorded and similar past runs recalled ([`experience`]).

pub mod experience;
mod memory_tools;
mod model_tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tabagent_agent::mcp::{self, McpServer, McpTransport};
use tabagent_agent::tools::Tool;
use tabagent_agent::tools::{
    Calculator, CurrentTime, ListFiles, ReadFile, RunCode, Toolbox, Workspace,
};
use tabagent_agent::{Sandbox, SandboxConfig};

pub use memory_tools::{DocumentSearch, GraphLookup, MemorySearch, MemoryWrite};
pub use model_tools::{Chat, Embed};

use crate::config::AgentSettings;
use crate::state::AppState;

/// What the tools need that is made once, at start: the sandbox (checked to work), the
/// workspace folders (checked to exist) and the MCP servers' tools (each server connected).
#[derive(Default)]
pub struct Kit {
    sandbox: Option<Arc<Sandbox>>,
    workspace: Option<Arc<Workspace>>,
    /// Each connected MCP server's label and tools.
    mcp: Vec<(String, Vec<Arc<dyn Tool>>)>,
}

/// How long an MCP server may take to start and list its tools, unless its settings say.
const MCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The MCP servers in `settings`, connected at once; one that cannot be reached is logged and
/// left out (the others and the built-in tools still work).
async fn connect_mcp(settings: &AgentSettings) -> Vec<(String, Vec<Arc<dyn Tool>>)> {
    let servers: Vec<McpServer> = settings
        .mcp_servers
        .iter()
        .map(|(label, server)| McpServer {
            label: label.clone(),
            transport: match (&server.command, &server.url) {
                (Some(command), _) => McpTransport::Stdio {
                    command: command.clone(),
                    args: server.args.clone(),
                    env: server.env.clone(),
                },
                (None, url) => McpTransport::Http {
                    url: url.clone().unwrap_or_default(),
                    bearer: server.api_key.as_ref().map(|k| k.expose().to_string()),
                },
            },
            allowed_tools: server.allowed_tools.clone(),
            connect_timeout: server
                .connect_timeout_secs
                .map_or(MCP_CONNECT_TIMEOUT, Duration::from_secs),
        })
        .collect();
    let connected = futures_util::future::join_all(servers.iter().map(mcp::connect)).await;
    let mut kept = Vec::new();
    for (server, connection) in servers.iter().zip(connected) {
        match connection {
            Ok(connection) => {
                tracing::info!(
                    server = %connection.label,
                    tools = connection.tools.len(),
                    "MCP server's tools offered to agents"
                );
                // The connection lives as long as its tools (they hold it).
                kept.push((connection.label.clone(), connection.tools.clone()));
            }
            Err(error) => tracing::error!(server = %server.label, %error, "MCP server left out"),
        }
    }
    kept
}

impl Kit {
    /// The kit `settings` ask for; an error names the setting that cannot be met.
    pub async fn start(settings: &AgentSettings) -> anyhow::Result<Kit> {
        let sandbox = match settings.allow_code {
            true => Some(Arc::new(
                Sandbox::new(SandboxConfig::default())
                    .await
                    .context("agent.allow_code is on, but the sandbox cannot run")?,
            )),
            false => None,
        };
        let workspace = match settings.workspaces.is_empty() {
            true => None,
            false => {
                let roots: Vec<_> = settings
                    .workspaces
                    .iter()
                    .map(|(name, path)| (name.clone(), path.clone()))
                    .collect();
                Some(Arc::new(
                    Workspace::new(&roots, settings.max_read_bytes)
                        .context("an agent.workspaces folder cannot be used")?,
                ))
            }
        };
        let mcp = connect_mcp(settings).await;
        Ok(Kit {
            sandbox,
            workspace,
            mcp,
        })
    }

    /// The labels of the MCP servers connected.
    pub fn mcp_labels(&self) -> impl Iterator<Item = &str> {
        self.mcp.iter().map(|(label, _)| label.as_str())
    }
}

/// Every tool this server offers (before a request narrows them).
pub fn toolbox(state: &AppState) -> Toolbox {
    let settings = &state.config().agent;
    let kit = state.agent_kit();
    let mut toolbox = Toolbox::new(
        Duration::from_secs(settings.call_timeout_secs),
        settings.max_output_bytes,
    );
    if settings.tools {
        toolbox.add(Arc::new(Calculator));
        toolbox.add(Arc::new(CurrentTime));
        if state.memory().is_some() {
            toolbox.add(Arc::new(MemorySearch(state.clone())));
            toolbox.add(Arc::new(GraphLookup(state.clone())));
            toolbox.add(Arc::new(DocumentSearch(state.clone())));
        }
        if let Some(workspace) = &kit.workspace {
            toolbox.add(Arc::new(ListFiles(Arc::clone(workspace))));
            toolbox.add(Arc::new(ReadFile(Arc::clone(workspace))));
        }
    }
    if settings.allow_writes && state.memory().is_some() {
        toolbox.add(Arc::new(MemoryWrite(state.clone())));
    }
    if let Some(sandbox) = &kit.sandbox {
        toolbox.add(Arc::new(RunCode(Arc::clone(sandbox))));
    }
    // MCP servers' tools keep their names unless one is taken; then the server's label goes
    // first (`files_read_file`).
    for (label, tools) in &kit.mcp {
        for tool in tools {
            let name = tool.spec().name;
            match toolbox.names().contains(&name) {
                false => toolbox.add(Arc::clone(tool)),
                true => toolbox.add_as(format!("{label}_{name}"), Arc::clone(tool)),
            }
        }
    }
    toolbox
}

/// The tools served to MCP clients at `/mcp` and by `tabagent mcp`: the agents' built-in tools
/// as configured (not other MCP servers' tools), `memory_write` (an MCP client is a client of
/// the API, which writes to the memory anyway), `chat` and `embed`.
pub fn mcp_toolbox(state: &AppState) -> Toolbox {
    let agent = toolbox(state);
    let settings = &state.config().agent;
    let mut served = Toolbox::new(
        Duration::from_secs(settings.call_timeout_secs.max(300)),
        settings.max_output_bytes.max(1024 * 1024),
    );
    for tool in agent.tools() {
        if tool.server_label().is_none() {
            served.add(Arc::clone(tool));
        }
    }
    if state.memory().is_some() {
        served.add(Arc::new(MemoryWrite(state.clone())));
    }
    served.add(Arc::new(Chat(state.clone())));
    served.add(Arc::new(Embed(state.clone())));
    served
}

/// `text` on one line, cut to `max` characters (for tool results, notes and step logs).
pub fn excerpt(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// Why a tool the request names is not offered, in words for the error.
pub fn why_not_offered(state: &AppState, name: &str) -> String {
    let settings = &state.config().agent;
    let reason = match name {
        "memory_write" if !settings.allow_writes => "it writes, and agent.allow_writes is off",
        "run_code" if !settings.allow_code => "it runs code, and agent.allow_code is off",
        "list_files" | "read_file" if settings.workspaces.is_empty() => {
            "no agent.workspaces folder is configured"
        }
        "memory_search" | "graph_lookup" | "document_search" | "memory_write"
            if state.memory().is_none() =>
        {
            "the memory is off (memory.enabled = false)"
        }
        _ if !settings.tools => "agent.tools is off",
        _ => "there is no such tool",
    };
    format!("the tool `{name}` is not offered by this server: {reason}")
}
