//! Chrome native messaging: the browser starts `tabagent` with the calling extension's origin as
//! its argument and talks to it over stdin/stdout ([`frame`]); each message is an API request,
//! served like an HTTP request ([`host`], [`backend`]).
//!
//! **One engine.** A browser starts a new host for every `connectNative`, so by default
//! (`native.connect = "auto"`) the host first asks whether a tabagent server already runs at
//! `native.server_url` (default: this machine's `server.host`/`server.port`) and, if one answers,
//! relays requests to it: the extension shares that server's loaded models, memory and
//! queue. Otherwise the host serves in its own process, loading models on first use.
//! `tabagent serve --mode all` serves HTTP and, on its stdin/stdout, native messaging from one
//! process and one engine.

mod backend;
mod frame;
mod host;
pub mod install;

use anyhow::Context;

use backend::Backend;
pub use backend::NativeTransport;
use host::Limits;

use crate::config::{Config, NativeConnect};
use crate::state::AppState;

/// Where native messages are written: the process's original stdout.
pub type FrameOutput = tokio::fs::File;

/// Takes stdout for native messages and points file descriptor 1 at stderr, so nothing else in
/// the process (a library's print, a child process) can corrupt the message stream.
pub fn take_stdout() -> anyhow::Result<FrameOutput> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let _ = std::io::stdout().flush();
    let frames = rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3)
        .and_then(|frames| {
            rustix::stdio::dup2_stdout(std::io::stderr().as_fd())?;
            Ok(frames)
        })
        .map_err(std::io::Error::from)
        .context("cannot take stdout for native messaging")?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(frames)))
}

fn limits(config: &Config) -> Limits {
    Limits {
        max_message_bytes: config.native.max_message_bytes,
        max_reply_message_bytes: frame::MAX_TO_BROWSER,
        max_reply_body_bytes: 64 * 1024 * 1024,
        max_in_flight: config.native.max_in_flight,
    }
}

/// Serves native messaging on stdin/`output` from an already started server's state.
pub async fn serve_state(state: &AppState, output: FrameOutput) -> anyhow::Result<()> {
    let backend = Backend::InProcess(crate::http::router(state.clone()));
    host::serve(backend, tokio::io::stdin(), output, limits(state.config())).await
}

/// `tabagent native`, and what runs when a browser starts the binary (`origin` is then the
/// extension's `chrome-extension://ID/`).
pub async fn run(config: Config, origin: Option<String>) -> anyhow::Result<()> {
    let output = take_stdout()?;
    if let Some(origin) = &origin {
        tracing::info!(%origin, "started by the browser");
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()?;
    let url = config.native_server_url();
    let use_server = match config.native.connect {
        NativeConnect::InProcess => false,
        NativeConnect::Server => true,
        NativeConnect::Auto => match &url {
            Some(url) => backend::server_answers(&client, url).await,
            None => false,
        },
    };
    let limits = limits(&config);
    if use_server {
        let url = url.context("native.connect is `server`, but there is no server to connect to: set native.server_url")?;
        let backend = Backend::Server {
            client,
            url,
            api_key: config.server.api_keys.first().cloned(),
        };
        tracing::info!(backend = %backend.describe(), "serving native messages");
        return host::serve(backend, tokio::io::stdin(), output, limits).await;
    }
    let runtime = crate::commands::serve::Runtime::start(&config, false).await?;
    let backend = Backend::InProcess(crate::http::router(runtime.state.clone()));
    tracing::info!(backend = %backend.describe(), "serving native messages");
    let served = host::serve(backend, tokio::io::stdin(), output, limits).await;
    runtime.shutdown().await;
    served
}
