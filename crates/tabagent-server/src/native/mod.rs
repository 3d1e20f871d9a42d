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

mod frame;
pub mod install;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::callers::Caller;
use crate::messages::{self, Backend, Limits};

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

/// The caller native messages are scheduled under.
fn native_caller() -> Caller {
    Caller(std::sync::Arc::from("native"))
}

/// Serves native messaging on stdin/`output` from an already started server's state.
pub async fn serve_state(state: &AppState, output: FrameOutput) -> anyhow::Result<()> {
    let backend = Backend::InProcess {
        app: state.in_process_app(),
        caller: native_caller(),
    };
    serve_stdio(backend, tokio::io::stdin(), output, limits(state.config())).await
}

/// Reads framed messages from `input` and writes framed replies to `output` until the input
/// ends and the requests it made are answered, or the output breaks.
async fn serve_stdio<R, W>(
    backend: Backend,
    input: R,
    output: W,
    limits: Limits,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (inbound_tx, inbound) = mpsc::channel(16);
    // Reading is not cancel-safe (a half-read message would be lost), so it has its own task.
    let reader = tokio::spawn(async move {
        let mut input = input;
        loop {
            let next = match frame::read(&mut input, limits.max_message_bytes).await {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(error = %err, "reading native messages failed");
                    messages::Inbound::End
                }
            };
            let last = matches!(
                next,
                messages::Inbound::End | messages::Inbound::Truncated { .. }
            );
            if inbound_tx.send(next).await.is_err() || last {
                break;
            }
        }
    });
    let (outbound, mut outbox) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(message) = outbox.recv().await {
            frame::write(&mut output, &message).await?;
        }
        Ok::<(), std::io::Error>(())
    });
    messages::serve(backend, inbound, outbound, limits).await;
    reader.abort();
    match writer.await {
        Ok(Err(err)) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
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
            Some(url) => messages::server_answers(&client, url).await,
            None => false,
        },
    };
    let limits = limits(&config);
    if use_server {
        let url = url.context("native.connect is `server`, but there is no server to connect to: set native.server_url")?;
        let backend = Backend::Server {
            client,
            url,
            api_key: config
                .server
                .api_keys
                .first()
                .map(|key| key.expose().to_string()),
        };
        tracing::info!(backend = %backend.describe(), "serving native messages");
        return serve_stdio(backend, tokio::io::stdin(), output, limits).await;
    }
    let runtime = crate::commands::serve::Runtime::start(&config, false, None).await?;
    let backend = Backend::InProcess {
        app: crate::http::app(runtime.state.clone()),
        caller: native_caller(),
    };
    tracing::info!(backend = %backend.describe(), "serving native messages");
    let served = serve_stdio(backend, tokio::io::stdin(), output, limits).await;
    runtime.shutdown().await;
    served
}
