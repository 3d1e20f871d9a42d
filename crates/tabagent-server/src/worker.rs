//! The Python ML worker as the server runs it (`[worker]`): when it runs, where its models are
//! found, and `tabagent worker setup`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tabagent_hub::{HubCache, RepoId, Revision};
use tabagent_worker::{
    Environment, EnvironmentConfig, ModelDir, ModelRoots, Supervisor, SupervisorConfig,
};

use crate::config::{Config, WorkerMode};

/// Finds the worker's models by id: `models.directories` first, then the worker model directory
/// (`<data_dir>/worker-models/<id>`), then the Hugging Face cache (`owner/name`, its `main`).
pub struct CatalogRoots {
    directories: BTreeMap<String, PathBuf>,
    worker_models: PathBuf,
    hub: HubCache,
}

impl CatalogRoots {
    /// The roots `config` names.
    pub fn new(config: &Config) -> Self {
        Self {
            directories: config.models.directories.clone(),
            worker_models: worker_models_dir(config),
            hub: config.hub_cache(),
        }
    }
}

/// Where models for the worker may be placed by name (`scripts/setup` links them there).
pub fn worker_models_dir(config: &Config) -> PathBuf {
    config.storage.data_dir.join("worker-models")
}

impl ModelRoots for CatalogRoots {
    fn locate(&self, model_id: &str) -> Option<ModelDir> {
        let here = |dir: PathBuf| {
            dir.is_dir().then(|| ModelDir {
                files: dir.clone(),
                boundary: dir,
            })
        };
        if let Some(dir) = self.directories.get(model_id) {
            return here(dir.clone());
        }
        if tabagent_models::store::validate_name(model_id).is_ok() {
            if let Some(found) = here(self.worker_models.join(model_id)) {
                return Some(found);
            }
        }
        let repo = RepoId::parse(model_id).ok()?;
        let commit = self.hub.resolve(&repo, &Revision::main()).ok()??;
        let repo_dir = self.hub.repo_dir(&repo);
        let files = repo_dir.join("snapshots").join(commit);
        // A snapshot's files are links into the repository's blobs: its boundary is the
        // repository's directory.
        if !files.is_dir() {
            return None;
        }
        Some(ModelDir {
            files,
            boundary: repo_dir,
        })
    }
}

fn environment_config(config: &Config) -> EnvironmentConfig {
    EnvironmentConfig {
        dir: config.worker.dir(&config.storage.data_dir),
        python: config.worker.python.clone(),
    }
}

/// Makes the worker's environment (`tabagent worker setup`).
pub async fn setup(config: &Config) -> anyhow::Result<Environment> {
    Ok(Environment::prepare(&environment_config(config)).await?)
}

/// Starts the worker as `[worker]` says: `None` when it is off, or `auto` and its environment
/// is not made. With `on`, the environment is made first when needed, in the background: the
/// server serves meanwhile, and worker calls wait or answer 503.
pub fn start(config: &Config) -> Option<Supervisor> {
    let settings = &config.worker;
    let environment = environment_config(config);
    let prepare = match settings.mode {
        WorkerMode::Off => return None,
        WorkerMode::Auto if Environment::existing(&environment).is_none() => {
            tracing::info!("the ML worker's environment is not made (`tabagent worker setup` makes it): vision and speech answer 503");
            return None;
        }
        WorkerMode::Auto => false,
        WorkerMode::On => true,
    };
    let supervisor_config = SupervisorConfig {
        prepare,
        threads: settings.threads,
        start_timeout: Duration::from_secs(settings.start_timeout_secs),
        call_wait: Duration::from_secs(settings.call_wait_secs),
        ..SupervisorConfig::new(environment)
    };
    match Supervisor::start(supervisor_config, Arc::new(CatalogRoots::new(config))) {
        Ok(supervisor) => Some(supervisor),
        Err(err) => {
            tracing::error!(error = %err, "the ML worker could not be started");
            None
        }
    }
}

/// `tabagent worker setup|status`.
pub async fn run(config: &Config, action: crate::cli::WorkerAction) -> anyhow::Result<()> {
    let environment = environment_config(config);
    match action {
        crate::cli::WorkerAction::Setup => {
            eprintln!(
                "making the ML worker's environment in {} (pip: minutes the first time)",
                environment.dir.display()
            );
            let ready = setup(config).await?;
            println!("ready: {}", ready.python.display());
        }
        crate::cli::WorkerAction::Link { name, dir } => {
            tabagent_models::store::validate_name(&name).map_err(|err| anyhow::anyhow!("{err}"))?;
            let dir = std::fs::canonicalize(&dir)
                .map_err(|err| anyhow::anyhow!("{}: {err}", dir.display()))?;
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory", dir.display());
            }
            let models = worker_models_dir(config);
            std::fs::create_dir_all(&models)?;
            let link = models.join(&name);
            // Replaced atomically: a link beside, renamed over the old one.
            let staged = models.join(format!(".{name}.link"));
            let _ = std::fs::remove_file(&staged);
            std::os::unix::fs::symlink(&dir, &staged)?;
            std::fs::rename(&staged, &link)?;
            println!("{name} -> {}", dir.display());
        }
        crate::cli::WorkerAction::Status => match Environment::existing(&environment) {
            Some(ready) => println!("ready: {}", ready.python.display()),
            None => println!(
                "not made: run `tabagent worker setup` (it goes in {})",
                environment.dir.display()
            ),
        },
    }
    Ok(())
}
