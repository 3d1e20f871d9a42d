//! `[agent]`: the tools `/v1/responses` may run for a model, and the MCP servers it may reach.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Server-side tools for agents (`[agent]`): what `/v1/responses` may run for a model. A
/// request picks among these and can never add to them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Offer the tools that only read: calculator, current time, memory search, knowledge-graph
    /// lookup, document search, and reading files in `workspaces`.
    pub tools: bool,
    /// Also offer `memory_write` (the model writes notes into the memory).
    pub allow_writes: bool,
    /// Also offer `run_code` (Python and shell snippets in the bubblewrap sandbox).
    pub allow_code: bool,
    /// Folders the model may list and read, by the name it is told (`docs = "/srv/docs"`).
    pub workspaces: std::collections::BTreeMap<String, PathBuf>,
    /// Model turns one run may take (a request may ask for fewer).
    pub max_steps: usize,
    /// Tokens one run may generate over all its turns.
    pub max_tokens: u32,
    /// Tokens one model turn may generate.
    pub max_step_tokens: u32,
    /// Seconds one tool call may take.
    pub call_timeout_secs: u64,
    /// The most bytes of one tool's output given to the model.
    pub max_output_bytes: usize,
    /// The most bytes of a file `read_file` returns.
    pub max_read_bytes: u64,
    /// Record every run (steps, tool calls, timings, outcome) in the `experience` store and its
    /// tool outputs in `tool-results`.
    pub record: bool,
    /// How many similar past runs (from `experience`) are shown to the model before it plans;
    /// 0: none.
    pub recall: usize,
    /// MCP servers whose tools agents may use, by label (`[agent.mcp_servers.files]`). A
    /// request names a server by its label; it cannot add one.
    pub mcp_servers: std::collections::BTreeMap<String, McpServerSettings>,
    /// Serve tabagent's own tools to MCP clients at `/mcp` (Streamable HTTP), behind the API's
    /// keys and Host checks.
    pub serve_mcp: bool,
}

/// An MCP server agents may use: a command speaking MCP over stdio, or a Streamable HTTP URL.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct McpServerSettings {
    /// The program to start (stdio).
    pub command: Option<PathBuf>,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to its environment.
    pub env: std::collections::BTreeMap<String, String>,
    /// Its Streamable HTTP endpoint, instead of a command.
    pub url: Option<String>,
    /// The bearer token for `url`.
    pub api_key: Option<tabagent_core::Secret>,
    /// Only these of its tools are offered (all when unset).
    pub allowed_tools: Option<Vec<String>>,
    /// Seconds it may take to start and list its tools.
    pub connect_timeout_secs: Option<u64>,
}

impl std::fmt::Debug for McpServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The environment may hold the server's own secrets: its names only.
        f.debug_struct("McpServerSettings")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(tabagent_core::secret::redact_credentials),
            )
            .field("api_key", &self.api_key)
            .field("allowed_tools", &self.allowed_tools)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            tools: true,
            allow_writes: false,
            allow_code: false,
            workspaces: std::collections::BTreeMap::new(),
            max_steps: 8,
            max_tokens: 4096,
            max_step_tokens: 1024,
            call_timeout_secs: 30,
            max_output_bytes: 16 * 1024,
            max_read_bytes: 64 * 1024,
            record: true,
            recall: 2,
            mcp_servers: std::collections::BTreeMap::new(),
            serve_mcp: true,
        }
    }
}

/// `[agent]` as `/v1/config` shows it: an MCP server's environment is where its own tokens go,
/// so only the names are kept.
pub(super) fn redact(agent: &mut serde_json::Value) {
    let servers = agent
        .get_mut("mcp_servers")
        .and_then(serde_json::Value::as_object_mut);
    for server in servers.into_iter().flat_map(|s| s.values_mut()) {
        if let Some(env) = server
            .get_mut("env")
            .and_then(serde_json::Value::as_object_mut)
        {
            env.values_mut()
                .for_each(|v| *v = serde_json::json!("[redacted]"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn an_mcp_servers_tokens_are_not_shown() {
        let mut config = Config::default();
        config.agent.mcp_servers.insert(
            "github".into(),
            McpServerSettings {
                command: Some("github-mcp".into()),
                env: [("GITHUB_TOKEN".to_string(), "ghp_s3cret".to_string())].into(),
                ..McpServerSettings::default()
            },
        );
        config.agent.mcp_servers.insert(
            "remote".into(),
            McpServerSettings {
                url: Some("https://user:hunter2@mcp.example/mcp".into()),
                api_key: Some("bearer-s3cret".to_string().into()),
                ..McpServerSettings::default()
            },
        );
        let shown = config.redacted_json().to_string();
        let debugged = format!("{config:?}");
        for secret in ["ghp_s3cret", "hunter2", "bearer-s3cret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert!(!debugged.contains(secret), "{secret} in {debugged}");
        }
        assert!(shown.contains("GITHUB_TOKEN"));
    }
}
