//! The Model Context Protocol both ways, over the official Rust SDK (`rmcp`):
//!
//! - [`ToolboxServer`] serves a [`Toolbox`](crate::tools::Toolbox) to MCP clients (editors,
//!   desktop assistants, other agents) over any rmcp transport: stdio, or Streamable HTTP
//!   mounted in a web server.
//! - [`connect`] starts or reaches an MCP server ([`McpServer`]: a command over stdio, or a
//!   Streamable HTTP URL), lists its tools and wraps each one the server's allowlist lets
//!   through as a [`Tool`](crate::tools::Tool), so it joins an agent's toolbox and is bounded,
//!   logged and reported like a built-in one.

mod client;
mod http;
mod server;

pub use client::{connect, McpConnection, McpError, McpServer, McpTransport};
pub use server::ToolboxServer;

/// The protocol version tabagent asks for: the newest one with an `initialize` handshake,
/// which every SDK speaks.
pub(crate) fn protocol() -> rmcp::model::ProtocolVersion {
    rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE
}
