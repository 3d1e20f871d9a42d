//! `tabagent models` and `tabagent import`.

use anyhow::Context;
use tabagent_models::store::ModelStore;

use crate::catalog::Source;
use crate::cli::{ImportArgs, ModelsAction};
use crate::config::Config;

/// `tabagent models [ls|show|rm]`.
pub fn run(config: &Config, action: Option<ModelsAction>) -> anyhow::Result<()> {
    match action.unwrap_or(ModelsAction::Ls) {
        ModelsAction::Ls => list(config),
        ModelsAction::Show { id } => show(config, &id),
        ModelsAction::Rm { id } => remove(config, &id),
    }
}

/// Prints one model's facts from its GGUF header.
pub fn show(config: &Config, id: &str) -> anyhow::Result<()> {
    let model = config.catalog()?.resolve(id)?.ok_or_else(|| {
        anyhow::anyhow!("the model `{id}` does not exist; `tabagent models` lists local models")
    })?;
    if model.kind != crate::catalog::ModelKind::Gguf {
        println!("id            {}", model.id);
        println!("kind          {}", model.kind.name());
        println!("path          {}", model.path.display());
        println!("size          {}", super::human_size(model.size_bytes));
        println!(
            "architecture  {}",
            model.architecture.as_deref().unwrap_or("?")
        );
        if let Some(context) = model.context_length {
            println!("positions     {context}");
        }
        return Ok(());
    }
    let info = tabagent_models::gguf::inspect_file(&model.path)
        .with_context(|| format!("cannot read {}", model.path.display()))?;
    println!("id            {}", model.id);
    match &model.source {
        Source::Imported { sha256 } => println!("source        imported, sha256 {sha256}"),
        Source::Hub { repo, commit, file } => {
            println!("source        hugging face cache: {repo} @ {commit}, {file}")
        }
        Source::Directory => println!("source        models.directories"),
    }
    println!("file          {}", model.path.display());
    println!("size          {}", super::human_size(model.size_bytes));
    println!("architecture  {}", info.architecture().unwrap_or("?"));
    println!("parameters    {:.1} M", info.parameter_count() as f64 / 1e6);
    println!(
        "quantization  {}",
        info.quantization().as_deref().unwrap_or("?")
    );
    println!(
        "context       {}",
        info.context_length()
            .map_or("?".to_string(), |c| c.to_string())
    );
    println!(
        "chat template {}",
        if info.chat_template().is_some() {
            "yes"
        } else {
            "no (a base model: use /v1/completions)"
        }
    );
    Ok(())
}

/// Removes a model's file (the blob goes once nothing else uses it).
pub fn remove(config: &Config, id: &str) -> anyhow::Result<()> {
    let catalog = config.catalog()?;
    let model = catalog.resolve(id)?.ok_or_else(|| {
        anyhow::anyhow!("the model `{id}` does not exist; `tabagent models` lists local models")
    })?;
    catalog.remove(&model)?;
    println!(
        "removed {} ({})",
        model.id,
        super::human_size(model.size_bytes)
    );
    Ok(())
}

/// Prints the local models as a table: imported ones and those in the Hugging Face cache.
pub fn list(config: &Config) -> anyhow::Result<()> {
    let catalog = config.catalog()?;
    let models = catalog.list()?;
    if models.is_empty() {
        println!(
            "no models yet: `tabagent pull OWNER/REPO:QUANT` downloads one, `tabagent import FILE.gguf --name NAME` adds a local file"
        );
        println!("(Hugging Face cache: {})", catalog.hub().root().display());
        return Ok(());
    }
    println!(
        "{:<48} {:>9} {:<12} {:>8} {:<5} SOURCE",
        "ID", "SIZE", "ARCH", "CONTEXT", "CHAT"
    );
    for model in models {
        let source = match &model.source {
            Source::Imported { sha256 } => {
                format!("imported, sha256 {}", &sha256[..12.min(sha256.len())])
            }
            Source::Hub { commit, .. } => {
                format!("hf cache, commit {}", &commit[..12.min(commit.len())])
            }
            Source::Directory => format!("directory {}", model.path.display()),
        };
        println!(
            "{:<48} {:>9} {:<12} {:>8} {:<5} {source}",
            model.id,
            super::human_size(model.size_bytes),
            model.architecture.as_deref().unwrap_or("?"),
            model
                .context_length
                .map_or("?".to_string(), |c| c.to_string()),
            if model.has_chat_template { "yes" } else { "no" },
        );
    }
    Ok(())
}

/// Validates, copies and registers a GGUF file.
pub fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<()> {
    let store = ModelStore::open(&config.models_dir())?;
    let entry = store
        .import_gguf(&args.path, args.name.as_deref(), args.sha256.as_deref())
        .with_context(|| format!("cannot import {}", args.path.display()))?;
    println!(
        "imported {} ({}, sha256 {})",
        entry.name,
        super::human_size(entry.size_bytes),
        entry.sha256
    );
    Ok(())
}
