//! `tabagent ingest`: documents into the memory from the command line, with a progress bar;
//! `--list` and `--remove` for what is there. The memory is opened as the server opens it (the
//! embedded database is safe to share with a running server), and passages are embedded in this
//! process with the memory's embedding model.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tabagent_librarian::{DocumentInfo, DocumentStatus, IngestOutcome};

use crate::cli::IngestArgs;
use crate::config::Config;

/// Reads the documents named, or lists or removes them.
pub async fn run(config: Config, args: IngestArgs) -> anyhow::Result<()> {
    if !config.memory.enabled {
        bail!("the memory is off (memory.enabled = false): there is nowhere to keep documents");
    }
    let state = super::serve::Runtime::local(&config).await?;
    let shelf = state
        .librarian()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.list {
        for document in shelf.list().await? {
            print(&document, None, args.json)?;
        }
        return Ok(());
    }
    if !args.remove.is_empty() {
        for id in &args.remove {
            let document = shelf.remove(id).await?;
            if args.json {
                println!("{}", serde_json::json!({"removed": document.id}));
            } else {
                println!("removed  {}  {}", document.id, document.name);
            }
        }
        return Ok(());
    }
    if args.paths.is_empty() {
        bail!("name the files or folders to read (or --list, --remove ID)");
    }
    let files = files(&args.paths)?;
    if files.is_empty() {
        bail!(
            "no documents there (the librarian reads .pdf, .html, .md, .txt, .docx and .odt files)"
        );
    }
    let bar = ProgressBar::with_draw_target(Some(files.len() as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{pos:>4}/{len} [{bar:30}] {elapsed} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut failed = 0usize;
    for path in files {
        bar.set_message(path.display().to_string());
        match shelf.ingest_file(&path).await {
            Ok((document, outcome)) => {
                bar.suspend(|| print(&document, Some(outcome), args.json))?
            }
            Err(error) => {
                failed += 1;
                bar.suspend(|| {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({"path": path, "error": error.to_string()})
                        );
                    } else {
                        eprintln!("failed   {}: {error}", path.display());
                    }
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failed > 0 {
        bail!("{failed} document(s) could not be read");
    }
    Ok(())
}

/// The documents under `paths`: files as given, folders read through (hidden files, links and
/// unknown formats skipped), as absolute paths.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let absolute = path
            .canonicalize()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if absolute.is_dir() {
            out.extend(tabagent_librarian::watch::files_under(&absolute));
        } else {
            out.push(absolute);
        }
    }
    out.dedup();
    Ok(out)
}

fn print(
    document: &DocumentInfo,
    outcome: Option<IngestOutcome>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(document)?;
        if let (Some(outcome), Some(object)) = (outcome, value.as_object_mut()) {
            object.insert("outcome".into(), serde_json::to_value(outcome)?);
        }
        println!("{value}");
        return Ok(());
    }
    let what = match (outcome, document.status) {
        (_, DocumentStatus::Failed) => "failed",
        (Some(IngestOutcome::Added), _) => "added",
        (Some(IngestOutcome::Replaced), _) => "replaced",
        (Some(IngestOutcome::Unchanged), _) => "unchanged",
        (Some(IngestOutcome::Moved), _) => "moved",
        (None, DocumentStatus::Ready) => "ready",
    };
    let pages = document
        .pages
        .map(|p| format!("{p} page(s), "))
        .unwrap_or_default();
    let detail = match &document.error {
        Some(error) => error.clone(),
        None => format!("{pages}{} passage(s)", document.chunks),
    };
    println!(
        "{what:<9} {}  {}  ({detail})",
        document.id,
        document.path.as_deref().unwrap_or(&document.name)
    );
    for warning in &document.warnings {
        println!("          warning: {warning}");
    }
    Ok(())
}
