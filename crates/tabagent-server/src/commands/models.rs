//! `tabagent models` and `tabagent import`.

use anyhow::Context;
use tabagent_models::store::ModelStore;

use crate::cli::ImportArgs;
use crate::config::Config;

/// Prints the local models as a table.
pub fn list(config: &Config) -> anyhow::Result<()> {
    let store = ModelStore::open(&config.models_dir())?;
    let models = store.list()?;
    if models.is_empty() {
        println!("no models yet: `tabagent import FILE.gguf --name NAME` adds one");
        return Ok(());
    }
    println!(
        "{:<32} {:>9} {:<12} {:>8} {:<5} SHA256",
        "NAME", "SIZE", "ARCH", "CONTEXT", "CHAT"
    );
    for model in models {
        println!(
            "{:<32} {:>9} {:<12} {:>8} {:<5} {}",
            model.name,
            human_size(model.size_bytes),
            model.architecture.as_deref().unwrap_or("?"),
            model
                .context_length
                .map_or("?".to_string(), |c| c.to_string()),
            if model.has_chat_template { "yes" } else { "no" },
            &model.sha256[..12.min(model.sha256.len())],
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
        human_size(entry.size_bytes),
        entry.sha256
    );
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
