//! Runs the fake OpenAI-compatible engine as a process, answering every chat request at once
//! (streamed or not): the instant upstream of the proxy benchmark (`scripts/bench-router`).
//!
//! `tabagent-fake-engine [--port P]` prints `listening on http://127.0.0.1:PORT/v1` once it
//! accepts connections.

use std::io::Write;

use clap::Parser;
use tabagent_testhub::engine::{Behaviour, FakeEngine};

#[derive(Parser)]
#[command(about = "An OpenAI-compatible engine that answers every chat request at once")]
struct Args {
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let engine =
        match FakeEngine::start_on(args.port, vec![Behaviour::Answer(vec!["Hello", " there"])])
            .await
        {
            Ok(engine) => engine,
            Err(err) => {
                eprintln!("tabagent-fake-engine: {err}");
                std::process::exit(1);
            }
        };
    println!("listening on {}", engine.base_url);
    let _ = std::io::stdout().flush();
    std::future::pending::<()>().await;
}
