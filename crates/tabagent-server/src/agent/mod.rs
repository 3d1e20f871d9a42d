//! Agents on the server: the tools a model may call in `/v1/responses` and how a run is made.
//!
//! What is offered is the configuration's (`[agent]`): the read-only tools unless
//! `agent.tools` is off, `memory_write` with `agent.allow_writes`, `run_code` with
//! `agent.allow_code`. A request picks among them and cannot add to them. Each run's model is
//! the generation service, so the loop runs over local and routed models alike; each run is
//! recorded and similar past runs recalled ([`experience`]).

pub mod experience;
mod memory_tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tabagent_agent::tools::{
    Calculator, CurrentTime, ListFiles, ReadFile, RunCode, Toolbox, Workspace,
};
use tabagent_agent::{Sandbox, SandboxConfig};

pub use memory_tools::{DocumentSearch, GraphLookup, MemorySearch, MemoryWrite};

use crate::config::AgentSettings;
use crate::state::AppState;

/// What the tools need that is made once, at start: the sandbox (checked to work) and the
/// workspace folders (checked to exist).
#[derive(Default)]
pub struct Kit {
    sandbox: Option<Arc<Sandbox>>,
    workspace: Option<Arc<Workspace>>,
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
        Ok(Kit { sandbox, workspace })
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
    toolbox
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
