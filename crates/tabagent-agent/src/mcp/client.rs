//! MCP servers as tools: [`connect`] starts a command (stdio) or reaches a URL (Streamable
//! HTTP), completes the handshake, lists the tools, and wraps each allowed one as a [`Tool`]
//! whose calls go to the server. A call's protocol error or the server's going away is the
//! call's error; the toolbox bounds its time (dropping the call sends the server a cancel).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject,
};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::Value;
use tabagent_core::ToolSpec;

use super::http::HttpClient;
use crate::tools::{Tool, ToolError, ToolFuture};

/// How to reach an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// Start this command and speak over its standard input and output.
    Stdio {
        /// The program.
        command: PathBuf,
        /// Its arguments.
        args: Vec<String>,
        /// Variables added to its environment.
        env: BTreeMap<String, String>,
    },
    /// Streamable HTTP at this URL, with this bearer token.
    Http {
        /// The endpoint (`http://host:port/mcp`).
        url: String,
        /// Sent as `Authorization: Bearer ...`.
        bearer: Option<String>,
    },
}

/// An MCP server an agent may use.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServer {
    /// Its name in logs and in `mcp_call` items.
    pub label: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// The only tools of it offered (all when `None`).
    pub allowed_tools: Option<Vec<String>>,
    /// How long the handshake and the tool list may take.
    pub connect_timeout: Duration,
}

/// Why an MCP server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// Its command could not be started.
    #[error("MCP server {label:?} could not be started: {source}")]
    Spawn {
        /// The server.
        label: String,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("MCP server {label:?} did not complete the handshake: {message}")]
    Handshake {
        /// The server.
        label: String,
        /// Why.
        message: String,
    },
    /// Listing its tools failed.
    #[error("MCP server {label:?} did not list its tools: {message}")]
    ListTools {
        /// The server.
        label: String,
        /// Why.
        message: String,
    },
    /// It took longer than its connect timeout.
    #[error("MCP server {label:?} did not answer within {timeout:?}")]
    TimedOut {
        /// The server.
        label: String,
        /// The limit.
        timeout: Duration,
    },
}

/// A running connection to an MCP server, and its tools.
pub struct McpConnection {
    /// The server.
    pub label: String,
    /// Its name and version, as it said.
    pub server_info: Option<String>,
    /// Its allowed tools, ready for a toolbox.
    pub tools: Vec<Arc<dyn Tool>>,
    service: Arc<RunningService<RoleClient, ClientConfig>>,
}

impl McpConnection {
    /// Closes the connection (a stdio server's process is ended).
    pub async fn close(self) {
        if let Ok(mut service) = Arc::try_unwrap(self.service) {
            let _ = service.close_with_timeout(Duration::from_secs(5)).await;
        }
    }
}

/// Connects to `server` and wraps its allowed tools.
pub async fn connect(server: &McpServer) -> Result<McpConnection, McpError> {
    let label = server.label.clone();
    tokio::time::timeout(server.connect_timeout, connect_now(server))
        .await
        .unwrap_or(Err(McpError::TimedOut {
            label,
            timeout: server.connect_timeout,
        }))
}

async fn connect_now(server: &McpServer) -> Result<McpConnection, McpError> {
    let label = server.label.clone();
    let handshake = |e: &dyn std::fmt::Display| McpError::Handshake {
        label: label.clone(),
        message: e.to_string(),
    };
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("tabagent", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(super::protocol());
    let service = match &server.transport {
        McpTransport::Stdio { command, args, env } => {
            let mut process = tokio::process::Command::new(command);
            process.args(args).envs(env);
            let (transport, _stderr) = TokioChildProcess::builder(process)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|source| McpError::Spawn {
                    label: label.clone(),
                    source,
                })?;
            client.serve(transport).await.map_err(|e| handshake(&e))?
        }
        McpTransport::Http { url, bearer } => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = bearer {
                config = config.auth_header(token.clone());
            }
            let transport = StreamableHttpClientTransport::with_client(HttpClient::new(), config);
            client.serve(transport).await.map_err(|e| handshake(&e))?
        }
    };
    let listed = service
        .list_all_tools()
        .await
        .map_err(|e| McpError::ListTools {
            label: label.clone(),
            message: e.to_string(),
        })?;
    let server_info = service
        .peer_info()
        .and_then(|info| info.server_info.clone())
        .map(|info| format!("{} {}", info.name, info.version));
    let service = Arc::new(service);
    let tools = listed
        .into_iter()
        .filter(|tool| {
            server
                .allowed_tools
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|a| a == tool.name.as_ref()))
        })
        .map(|tool| {
            Arc::new(McpTool {
                label: label.clone(),
                name: tool.name.to_string(),
                spec: ToolSpec {
                    name: tool.name.to_string(),
                    description: tool.description.as_deref().map(str::to_string),
                    parameters: Value::Object((*tool.input_schema).clone()),
                    strict: false,
                },
                read_only: tool
                    .annotations
                    .as_ref()
                    .and_then(|a| a.read_only_hint)
                    .unwrap_or(false),
                service: Arc::clone(&service),
            }) as Arc<dyn Tool>
        })
        .collect();
    tracing::info!(server = %label, info = ?server_info, "MCP server connected");
    Ok(McpConnection {
        label,
        server_info,
        tools,
        service,
    })
}

/// One tool of an MCP server.
struct McpTool {
    label: String,
    name: String,
    spec: ToolSpec,
    /// What the server says (a hint: the server is trusted as far as its configuration is).
    read_only: bool,
    service: Arc<RunningService<RoleClient, ClientConfig>>,
}

impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    fn has_effects(&self) -> bool {
        !self.read_only
    }

    fn server_label(&self) -> Option<&str> {
        Some(&self.label)
    }

    fn call(&self, arguments: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let arguments: JsonObject = match arguments {
                Value::Object(map) => map,
                _ => {
                    return Err(ToolError::InvalidArguments(
                        "the arguments must be a JSON object".into(),
                    ))
                }
            };
            let result = self
                .service
                .call_tool(CallToolRequestParams::new(self.name.clone()).with_arguments(arguments))
                .await
                .map_err(|e| ToolError::Failed(format!("MCP server {:?}: {e}", self.label)))?;
            let text = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                .collect::<Vec<_>>()
                .join("\n");
            let text = match (text.is_empty(), &result.structured_content) {
                (true, Some(structured)) => structured.to_string(),
                _ => text,
            };
            match result.is_error {
                Some(true) => Err(ToolError::Failed(text)),
                _ => Ok(text),
            }
        })
    }
}
