//! The `tabagent` binary: parses flags, loads the config, runs a command.

mod agent;
mod callers;
mod catalog;
mod cli;
mod commands;
mod config;
mod embedding;
mod error;
mod events;
mod generation;
mod hardware;
mod http;
mod images;
mod keep_alive;
mod librarian;
mod memory_backend;
mod messages;
mod metrics;
mod native;
mod probe;
mod pull_slots;
mod recommended;
mod registry;
mod routing;
mod state;
mod summaries;
mod surprise;
mod webrtc;
mod worker;

use std::process::ExitCode;

/// mimalloc keeps freed memory for reuse: with glibc's malloc every large request body (a
/// 791 KB frame) came back to the kernel and the next one faulted in fresh, zeroed pages, which
/// made reading it cost 1.5 ms of CPU (perf: page faults, `clear_page`, `munmap`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{Config, LogFormat};

fn main() -> ExitCode {
    // A browser starts a native messaging host as `<path> chrome-extension://ID/` (the manifest
    // cannot hold arguments), so that argument alone means `tabagent native`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let origin = args
        .get(1)
        .and_then(|arg| arg.to_str())
        .filter(|arg| arg.starts_with("chrome-extension://"))
        .map(str::to_string);
    let cli = match &origin {
        Some(_) => Cli::parse_from([args[0].clone(), "native".into()]),
        None => Cli::parse(),
    };
    match run(cli, origin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on; the chain of causes joined, no backtrace.
            eprintln!("error: {}", format_chain(&err));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, origin: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    cli.apply_globals(&mut config);
    match &cli.command {
        Command::Serve(args) => args.apply(&mut config),
        Command::Run(args) => args.engine.apply(&mut config),
        Command::Agent(args) => args.engine.apply(&mut config),
        Command::Mcp(args) => args.apply(&mut config),
        Command::Bench(args) => args.engine.apply(&mut config),
        Command::Pull(args) => {
            if let Some(connections) = args.connections {
                config.hub.connections = connections;
            }
        }
        Command::Models(_)
        | Command::Import(_)
        | Command::Hw(_)
        | Command::Memory(_)
        | Command::Worker(_)
        | Command::Native(_)
        | Command::ProbeModel(_)
        | Command::Ingest(_)
        | Command::Db(_) => {}
    }
    config.validate()?;
    let hosting = matches!(&cli.command, Command::Native(args) if args.action.is_none());
    init_logging(&config, matches!(cli.command, Command::Serve(_)) || hosting);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(config, args.mode).await,
            Command::Run(args) => commands::run::run(config, args).await,
            Command::Agent(args) => commands::agent::run(config, args).await,
            Command::Mcp(_) => commands::mcp::run(config).await,
            Command::Bench(args) => commands::bench::run(config, args).await,
            Command::Models(args) => commands::models::run(&config, args.action),
            Command::Import(args) => commands::models::import(&config, &args),
            Command::Pull(args) => commands::pull::run(&config, &args).await,
            Command::Hw(args) => hardware::run(&config, args.json),
            Command::Memory(args) => match args.action {
                cli::MemoryAction::Serve {
                    host,
                    port,
                    api_key,
                    tls_cert,
                    tls_key,
                    insecure,
                } => {
                    let tls = tls_cert.zip(tls_key);
                    commands::memory::serve(&config, &host, port, api_key, tls, insecure).await
                }
                action => commands::memory::run(&config, action).await,
            },
            Command::Db(args) => commands::memory::db(&config, args.action),
            Command::Ingest(args) => commands::ingest::run(config, args).await,
            Command::Worker(args) => worker::run(&config, args.action).await,
            Command::Native(args) => commands::native::run(config, args.action, origin).await,
            Command::ProbeModel(args) => probe::child(&args.file, args.gpu_layers).await,
        }
    })
}

fn format_chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

fn init_logging(config: &Config, serving: bool) {
    // Outside `serve`, only warnings and errors unless asked: the terminal belongs to the output.
    let level = if serving || config.log.level != "info" {
        config.log.level.clone()
    } else {
        "warn".to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},llama-cpp-2=warn,llama_cpp_2=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
