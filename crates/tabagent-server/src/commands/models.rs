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
        Source::ImportedDirectory => println!("source        imported directory"),
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
            Source::ImportedDirectory => "imported directory".to_string(),
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
    if args.path.is_dir() {
        return import_directory(config, args);
    }
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

/// `tabagent import DIR`: a model directory (an encoder: `tokenizer.json` beside safetensors or
/// ONNX weights; an ONNX model; a worker model) copied into the store under a name, whole or
/// not at all (copied beside, then renamed into place).
fn import_directory(config: &Config, args: &ImportArgs) -> anyhow::Result<()> {
    if args.sha256.is_some() {
        anyhow::bail!("--sha256 checks one file; a directory has several");
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .ok_or_else(|| anyhow::anyhow!("name the model (--name)"))?,
    };
    tabagent_models::store::validate_name(&name)?;
    let catalog = config.catalog()?;
    if catalog.resolve(&name)?.is_some() {
        anyhow::bail!("a model named `{name}` exists; remove it first (`tabagent models rm {name}`) or choose another --name");
    }
    let probe = crate::catalog::probe_directory(&name, &args.path).ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a model directory tabagent runs (an encoder: tokenizer.json beside model.safetensors or an ONNX file; an ONNX model; a worker model)",
            args.path.display()
        )
    })?;
    let root = catalog.imported_directories_root();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let partial = root.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let copied = copy_tree(&args.path, &partial)
        .and_then(|bytes| std::fs::rename(&partial, root.join(&name)).map(|()| bytes));
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(anyhow::anyhow!(
                "cannot import {}: {e}",
                args.path.display()
            ));
        }
    };
    println!(
        "imported {name} ({} model, {})",
        probe.kind.name(),
        super::human_size(bytes)
    );
    Ok(())
}

/// Copies the regular files and folders under `from` into `to` (links are followed: the model's
/// files, wherever they live, are copied), fsynced; the bytes copied.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let metadata = std::fs::metadata(&source)?;
        if metadata.is_dir() {
            bytes += copy_tree(&source, &target)?;
        } else if metadata.is_file() {
            bytes += std::fs::copy(&source, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    Ok(bytes)
}
