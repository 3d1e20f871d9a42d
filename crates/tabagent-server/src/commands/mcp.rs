//! `tabagent mcp`: tabagent's tools served to one MCP client over stdin/stdout, the way
//! editors and desktop assistants start MCP servers. The server's parts run in this process
//! (the memory, the models, loaded when `chat` or `embed` first needs them); standard output
//! carries the protocol alone, everything else (llama.cpp's own prints included) goes to
//! standard error.

use anyhow::Context as _;
use rmcp::ServiceExt as _;

use crate::config::Config;

/// Serves until the client closes standard input.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let output = crate::native::take_stdout()?;
    let runtime = super::serve::Runtime::start(&config, false, None).await?;
    let server = crate::http::mcp::server(&runtime.state);
    let running = server
        .serve((tokio::io::stdin(), output))
        .await
        .context("the MCP client did not complete the handshake")?;
    running.waiting().await?;
    runtime.shutdown().await;
    Ok(())
}
