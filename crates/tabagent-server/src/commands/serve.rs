//! `tabagent serve`.

use crate::memory_backend::MemoryBackend;
use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::Mode;
use crate::config::Config;
use crate::http::Surface;
use crate::registry::ModelRegistry;
use crate::state::AppState;

/// Everything a transport serves from: the models, memory, router and worker, started.
pub struct Runtime {
    pub state: AppState,
    worker: Option<tabagent_worker::Supervisor>,
}

impl Runtime {
    /// The state's parts every command shares: the catalog and registry, the memory.
    async fn parts(config: &Config) -> anyhow::Result<crate::state::AppStateBuilder> {
        let catalog = config.catalog()?;
        // The default model is pinned under its canonical id (`owner/name:q4_1` → `:Q4_1`).
        let pinned = catalog
            .resolve(&config.models.default)
            .ok()
            .flatten()
            .map_or_else(|| config.models.default.clone(), |model| model.id);
        let registry = ModelRegistry::new(
            catalog,
            config.engine_config(),
            config.lifecycle(Some(pinned)),
        )
        .with_probes(&config.storage.data_dir)
        .with_encoders(crate::registry::EncoderLoading {
            runtime: config.onnx_runtime(),
            settings: config.encoder_settings(),
        });
        let events = crate::events::Events::open(config)?;
        let memory = if config.memory.enabled {
            Some(
                MemoryBackend::open(config)
                    .await?
                    .publishing(events.clone()),
            )
        } else {
            None
        };
        let (config, missing) = with_embedding_model_found(config, registry.catalog());
        let builder = AppState::builder(config, registry)?
            .memory(memory)
            .events(events);
        // Said once the configuration has passed: a server that will not start says only why.
        if missing && builder.memory_enabled() {
            tracing::warn!(
                model = crate::config::DEFAULT_EMBEDDING_MODEL,
                "the memory's default embedding model is not installed: memory search is by keyword only \
                 (scripts/setup imports it; or `tabagent import DIR --name all-minilm-l6-v2`)"
            );
        }
        Ok(builder)
    }

    /// The models and memory alone, for a command that needs no worker, probes or summaries
    /// (`tabagent ingest`): models load when first used.
    pub async fn local(config: &Config) -> anyhow::Result<AppState> {
        let (state, _no_summaries) = Self::parts(config).await?.build();
        // What is not sent before the command ends waits in the outbox for the server.
        if let Some(events) = state.events() {
            crate::events::publisher::start(events.clone());
        }
        state.set_ready();
        Ok(state)
    }

    /// Opens the catalog and memory, starts the router's probes, the summarizer, the worker and
    /// the idle-model expiry; loads the default model in the background when `preload`.
    pub async fn start(
        config: &Config,
        preload: bool,
        webrtc: Option<tabagent_webrtc::Settings>,
    ) -> anyhow::Result<Runtime> {
        let builder = Self::parts(config).await?;
        let agent_kit = crate::agent::Kit::start(&config.agent).await?;
        let worker = crate::worker::start(config);
        let (state, summaries_due) = builder
            .worker(worker.as_ref().map(|supervisor| supervisor.worker()))
            .webrtc(webrtc)
            .agent_kit(agent_kit)
            .build();
        crate::routing::start_probes(&state);
        crate::summaries::start(&state, summaries_due);
        if let Some(events) = state.events() {
            crate::events::publisher::start(events.clone());
            crate::events::jobs::start(events.clone(), &state);
        }
        tokio::spawn(expire_idle_models(state.clone()));
        if preload && config.models.preload {
            tokio::spawn(self::preload(state.clone()));
        } else {
            state.set_ready();
        }
        Ok(Runtime { state, worker })
    }

    /// Stops the worker (SIGTERM, then SIGKILL).
    pub async fn shutdown(self) {
        if let Some(supervisor) = self.worker {
            supervisor.shutdown().await;
        }
    }
}

/// `config` with its memory's embedding model, if that model is there: an empty name means
/// none, and the default one (`all-minilm-l6-v2`, which `scripts/setup` imports) missing means
/// keyword search (and `true`, to be said once) rather than every memory write failing. A model
/// the configuration names itself is kept, so that a mistake in it shows.
fn with_embedding_model_found(
    config: &Config,
    catalog: &crate::catalog::Catalog,
) -> (Config, bool) {
    let mut config = config.clone();
    let model = config.memory.embedding_model.as_deref().map(str::trim);
    let missing = match model {
        Some("") => {
            config.memory.embedding_model = None;
            false
        }
        Some(crate::config::DEFAULT_EMBEDDING_MODEL)
            if !matches!(
                catalog.resolve(crate::config::DEFAULT_EMBEDDING_MODEL),
                Ok(Some(_))
            ) =>
        {
            config.memory.embedding_model = None;
            true
        }
        _ => false,
    };
    (config, missing)
}

/// Binds, starts loading the default model, and serves until SIGINT/SIGTERM; with
/// `--mode native` serves native messaging on stdin/stdout instead, and with `--mode all` both
/// (the native host ends when its input does, the HTTP API on a signal).
pub async fn run(config: Config, mode: Mode) -> anyhow::Result<()> {
    // Which listeners: the HTTP API (whole, or WebRTC signaling only), WebRTC sessions, and
    // native messaging on stdin/stdout.
    let (surface, webrtc, native) = match mode {
        Mode::Http => (Some(Surface::Full), false, false),
        Mode::Native => (None, false, true),
        Mode::Webrtc => (Some(Surface::Signaling), true, false),
        Mode::Web => (Some(Surface::Full), true, false),
        Mode::All => (Some(Surface::Full), true, true),
    };
    // Before anything can print: stdout carries native messages and nothing else.
    let frames = if native {
        Some(crate::native::take_stdout()?)
    } else {
        None
    };
    let listener = match surface {
        Some(_) => Some(bind(&config).await?),
        None => None,
    };
    let webrtc = match webrtc {
        true => Some(config.webrtc_settings()?),
        false => None,
    };
    let runtime = Runtime::start(&config, true, webrtc).await?;
    let state = runtime.state.clone();
    // Only the server follows the folders (not `tabagent mcp` or `ingest`, which share its parts).
    crate::librarian::start_following(&state);
    // Built once for every data channel and the native host; dropped when serving ends.
    let in_process_app = Arc::new(crate::http::app(state.clone()));
    state.share_in_process_app(&in_process_app);
    let native_host = frames.map(|frames| {
        let state = state.clone();
        tokio::spawn(async move { crate::native::serve_state(&state, frames).await })
    });
    if let Some(listener) = listener {
        let address = listener.local_addr()?;
        tracing::info!(%address, data_dir = %config.storage.data_dir.display(), "tabagent listening");
        // Tests and scripts read this line to find an ephemeral port (on stderr with --mode all).
        println!("tabagent listening on http://{address}");
        let _ = std::io::stdout().flush();
        let surface = surface.unwrap_or(Surface::Full);
        let server = &config.server;
        let limits = crate::http::listener::Limits {
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            header_timeout: std::time::Duration::from_secs(server.header_timeout_secs),
        };
        crate::http::listener::serve(
            listener,
            crate::http::app_for(state, surface),
            limits,
            shutdown_signal(),
        )
        .await?;
    } else if let Some(host) = native_host {
        tokio::select! {
            finished = host => finished??,
            () = shutdown_signal() => {}
        }
    }
    drop(in_process_app);
    runtime.shutdown().await;
    tracing::info!("tabagent stopped");
    Ok(())
}

async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let ip = config.bind_ip()?;
    tokio::net::TcpListener::bind((ip, config.server.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                config.server.host, config.server.port
            )
        })
}

/// Unloads idle models once their keep-alive has passed: sleeps until the next one is due, or
/// until a request changes a keep-alive.
async fn expire_idle_models(state: AppState) {
    loop {
        let next = state.registry().expire_idle();
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = state.registry().keep_alive_changed() => {}
        }
    }
}

async fn preload(state: AppState) {
    let name = state.config().models.default.clone();
    match state.registry().get(&name).await {
        Ok(_) => state.set_ready(),
        Err(err) => {
            tracing::error!(model = %name, error = %err, "the default model could not be loaded");
            state.set_startup_error(err.to_string());
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
