//! `tabagent pull OWNER/REPO[:QUANT|:FILE]`: a model from the Hub into the Hugging Face cache.

use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tabagent_hub::repo::Selector;
use tabagent_hub::{ModelSpec, ProgressEvent, RepoPath, Revision};

use crate::cli::PullArgs;
use crate::config::Config;

/// Resolves the file, downloads it with a progress bar, checks it is a usable GGUF model and
/// prints the id to run it by.
pub async fn run(config: &Config, args: &PullArgs) -> anyhow::Result<()> {
    let (spec, pinned) = match &args.model {
        Some(model) => (
            ModelSpec::parse(model)?,
            None::<crate::recommended::Recommended>,
        ),
        None => {
            let memory = crate::recommended::available_memory_mib();
            let chosen = crate::recommended::choose(&args.role, memory)?;
            eprintln!(
                "recommended {} model for {}: {} ({}, needs ~{} MiB)",
                args.role,
                memory.map_or("unknown memory".to_string(), |m| format!(
                    "{m} MiB available"
                )),
                chosen.name,
                super::human_size(chosen.size),
                chosen.ram_mib
            );
            (
                ModelSpec::parse(&format!("{}:{}", chosen.repo, chosen.file))?,
                Some(chosen),
            )
        }
    };
    let revision = Revision::parse(&args.revision)?;
    let client = config.hub_client()?;
    // Files that come with the weights, from the same commit: (path, pinned sha256).
    let mut companions: Vec<(String, Option<String>)> =
        pinned.as_ref().map_or_else(Vec::new, |chosen| {
            chosen
                .companions
                .iter()
                .map(|c| (c.path.clone(), Some(c.sha256.clone())))
                .collect()
        });
    let file = match &spec.selector {
        Selector::File(path) => path.clone(),
        Selector::OnlyGguf | Selector::Quant(_) => {
            let files = if client.config().offline {
                let cache = client.cache().clone();
                let repo = spec.repo.clone();
                tokio::task::spawn_blocking(move || cache.list(".gguf"))
                    .await??
                    .into_iter()
                    .filter(|f| f.repo == repo)
                    .map(|f| f.path.to_string())
                    .collect()
            } else {
                client.repo_info(&spec.repo, &revision).await?.files
            };
            match crate::catalog::encoder_files(&files) {
                // A repository without GGUF files but with an encoder: its weights and the
                // files sentence-transformers reads beside them.
                Some((weights, with)) if spec.selector == Selector::OnlyGguf => {
                    companions = with.into_iter().map(|p| (p, None)).collect();
                    RepoPath::parse(&weights)?
                }
                _ => RepoPath::parse(spec.choose(&files)?)?,
            }
        }
    };

    let bar = progress_bar(args.quiet);
    let shown = bar.clone();
    let progress = move |event: ProgressEvent| match event {
        ProgressEvent::Started { size, resumed, .. } => {
            shown.set_length(size);
            shown.set_position(resumed);
            if resumed > 0 {
                shown.println(format!(
                    "resuming: {} already downloaded",
                    super::human_size(resumed)
                ));
            }
        }
        ProgressEvent::Advanced { bytes } => shown.inc(bytes),
        ProgressEvent::Retrying { reason } => shown.println(format!("retrying: {reason}")),
        ProgressEvent::Verifying => shown.set_message("verifying"),
        ProgressEvent::Cached { .. } | ProgressEvent::Done => shown.finish_and_clear(),
    };
    let started = Instant::now();
    let got = client
        .download(&spec.repo, &revision, &file, &progress)
        .await
        .with_context(|| format!("cannot pull {}:{file}", spec.repo))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(chosen) = &pinned {
        anyhow::ensure!(
            got.etag == chosen.sha256,
            "the Hub serves {file} with sha256 {}, but the library pins {}; refusing it",
            got.etag,
            chosen.sha256
        );
    }
    // The rest of the model, from the very commit the weights came from.
    let commit = Revision::parse(&got.commit)?;
    for (companion, pin) in &companions {
        let path = RepoPath::parse(companion)?;
        let extra = client
            .download(&spec.repo, &commit, &path, &())
            .await
            .with_context(|| format!("cannot pull {}:{path}", spec.repo))?;
        if let Some(pin) = pin {
            let local = extra.path.clone();
            let actual =
                tokio::task::spawn_blocking(move || tabagent_hub::download::sha256_file(&local))
                    .await??;
            anyhow::ensure!(
                &actual == pin,
                "the Hub serves {path} with sha256 {actual}, but the library pins {pin}; refusing the model"
            );
        }
    }

    if file.as_str().to_ascii_lowercase().ends_with(".gguf") {
        let path = got.path.clone();
        tokio::task::spawn_blocking(move || tabagent_models::gguf::inspect_file(&path))
            .await?
            .with_context(|| format!("downloaded {file}, but it is not a usable GGUF model"))?;
    }
    let catalog = config.catalog()?;
    let path = got.path.clone();
    let id = tokio::task::spawn_blocking(move || catalog.list())
        .await??
        .into_iter()
        .find(|model| model.path == path || path.parent() == Some(model.path.as_path()))
        .map_or_else(|| format!("{}:{file}", spec.repo), |model| model.id);

    let check = if got.verified {
        "sha256 verified"
    } else {
        "no sha256 announced"
    };
    if got.fetched == 0 {
        println!(
            "{id} is already in the cache ({}, {check} when it was fetched)",
            super::human_size(got.size)
        );
    } else {
        println!(
            "pulled {id}: {} in {seconds:.1} s ({}/s), commit {}, {check}",
            super::human_size(got.fetched),
            super::human_size((got.fetched as f64 / seconds.max(1e-3)) as u64),
            &got.commit[..12],
        );
    }
    println!("  file: {}", got.path.display());
    if file.as_str().to_ascii_lowercase().ends_with(".gguf") {
        println!("  chat: tabagent run {id}");
    } else if !companions.is_empty() {
        println!(
            "  with: {}",
            companions
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("pulling");
    bar
}
