//! `/mcp`: tabagent's own tools for MCP clients (editors, desktop assistants, other agents)
//! over Streamable HTTP, through the official SDK's server. It sits behind the same guards as
//! the rest of the API (API keys, Host and Origin checks, body limits), so the SDK's own Host
//! check, which knows only loopback names, is off.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tabagent_agent::mcp::ToolboxServer;

use crate::state::AppState;

/// What an MCP client's model is told about tabagent's tools.
pub const INSTRUCTIONS: &str = "tabagent runs AI on this machine. Its tools search and write \
the user's long-term memory, look up the knowledge graph and ingested documents, ask a local \
language model (chat) and embed texts.";

/// The MCP server over `state`'s tools.
pub fn server(state: &AppState) -> ToolboxServer {
    ToolboxServer::new(
        crate::agent::mcp_toolbox(state),
        "tabagent",
        env!("CARGO_PKG_VERSION"),
        Some(INSTRUCTIONS.to_string()),
    )
}

/// The SDK answers a client ending its session (`DELETE`) with 202; the Python SDK takes only
/// 200 or 204 as done and logs a failure. The session is closed either way: say 200.
pub async fn session_end_is_ok(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ending = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if ending && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::OK;
    }
    response
}

/// The Streamable HTTP service (one MCP session per client).
pub fn service(state: &AppState) -> StreamableHttpService<ToolboxServer, LocalSessionManager> {
    let state = state.downgrade();
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            state
                .upgrade()
                .map(|state| server(&state))
                .ok_or_else(|| std::io::Error::other("the server is stopping"))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
