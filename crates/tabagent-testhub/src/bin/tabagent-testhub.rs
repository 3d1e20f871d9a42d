//! Runs the Hub stand-in as a process, for the Python interop tests and the download benchmark.
//!
//! `tabagent-testhub --repo OWNER/NAME=PATH[,PATH...] [--gated OWNER/NAME] [--token T] [--port P]`
//! prints `listening on http://127.0.0.1:PORT` once it accepts connections.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use tabagent_testhub::{Repo, TestHub};

#[derive(Parser)]
#[command(about = "A Hugging Face Hub stand-in serving local files over the Hub's protocol")]
struct Args {
    /// A repository and its files: OWNER/NAME=FILE[,FILE...] (served under their file names).
    #[arg(long, required = true)]
    repo: Vec<String>,
    /// Repositories that need the token.
    #[arg(long)]
    gated: Vec<String>,
    /// The token gated repositories accept.
    #[arg(long)]
    token: Option<String>,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

fn main() {
    if let Err(err) = run() {
        eprintln!("tabagent-testhub: {err}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut repos = Vec::new();
    for spec in &args.repo {
        let (id, files) = spec
            .split_once('=')
            .ok_or("expected --repo OWNER/NAME=FILE[,FILE...]")?;
        let mut repo = Repo::new(id);
        for file in files.split(',') {
            let path = PathBuf::from(file);
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("a file has no name")?
                .to_string();
            repo = repo
                .file(&name, &path)
                .map_err(|err| format!("{file}: {err}"))?;
        }
        if args.gated.iter().any(|g| g == id) {
            repo = repo.gated();
        }
        repos.push(repo);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let hub = TestHub::start_on(repos, args.token.clone(), args.port).await?;
        println!("listening on {}", hub.endpoint());
        std::io::stdout().flush()?;
        tokio::signal::ctrl_c().await?;
        drop(hub);
        Ok(())
    })
}
