//! The subcommands.

pub mod agent;
pub mod bench;
pub mod bench_embed;
pub mod ingest;
pub mod mcp;
pub mod memory;
pub mod models;
pub mod native;
pub mod pull;
pub mod run;
pub mod serve;

use anyhow::anyhow;
use tabagent_llama::LlamaEngine;

use crate::config::Config;

/// Loads the local model `name` in this process (for `run` and `bench`) with a context of at
/// least `min_ctx` tokens per sequence and `parallel` sequences (`None`: as `serve` would).
pub(crate) async fn load_local(
    config: &Config,
    name: &str,
    min_ctx: u32,
    parallel: Option<u32>,
) -> anyhow::Result<LlamaEngine> {
    let entry = config.catalog()?.resolve(name)?.ok_or_else(|| {
        anyhow!("the model `{name}` does not exist; `tabagent models` lists local models")
    })?;
    let path = entry.path;
    let mut engine_config = config.engine_config();
    if let Err(reason) =
        crate::probe::vet(&config.storage.data_dir, &path, engine_config.gpu_layers).await?
    {
        anyhow::bail!("the model `{name}` cannot be used: {reason}");
    }
    if let Some(parallel) = parallel {
        engine_config.parallel = parallel;
    }
    engine_config.ctx_per_slot = engine_config.ctx_per_slot.max(min_ctx);
    Ok(tokio::task::spawn_blocking(move || LlamaEngine::load(&path, engine_config)).await??)
}

/// `98.4 MB`: decimal units, as download tools and disks count.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
