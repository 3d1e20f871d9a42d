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
        transformers: config.worker.transformers,
    }
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

/// `tabagent worker setup|status|link`.
pub async fn run(config: &Config, action: crate::cli::WorkerAction) -> anyhow::Result<()> {
    let mut environment = environment_config(config);
    match action {
        crate::cli::WorkerAction::Setup { transformers } => {
            environment.transformers |= transformers;
            eprintln!(
                "making the ML worker's environment in {} (pip: minutes the first time)",
                environment.dir.display()
            );
            let ready = Environment::prepare(&environment).await?;
            println!("ready: {}", ready.python.display());
        }
        crate::cli::WorkerAction::Link { name, dir } => {
            tabagent_models::store::validate_name(&name).map_err(|err| anyhow::anyhow!("{err}"))?;
            let dir = std::fs::canonicalize(&dir)
                .map_err(|err| anyhow::anyhow!("{}: {err}", dir.display()))?;
            if !dir.is_dir() {
                anyhow::bail!("{} is not a directory", dir.display());
            }
            let kind = crate::catalog::worker_kind(&dir, true).ok_or_else(|| {
                anyhow::anyhow!(
                    "{} holds no model the worker runs (MediaPipe .task/.tflite files, Whisper's model.bin and vocabulary, or a Transformers config.json with safetensors)",
                    dir.display()
                )
            })?;
            let models = worker_models_dir(config);
            std::fs::create_dir_all(&models)?;
            let link = models.join(&name);
            // Replaced atomically: a link beside, renamed over the old one.
            let staged = models.join(format!(".{name}.link"));
            let _ = std::fs::remove_file(&staged);
            std::os::unix::fs::symlink(&dir, &staged)?;
            std::fs::rename(&staged, &link)?;
            println!("{name} -> {} ({})", dir.display(), kind.name());
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

/// A chat (or, with `prompt`, a raw completion) from a Transformers language model in the worker,
/// as the events every engine gives: the worker's chunks, with stop strings applied here (the
/// stream is dropped at a match, which ends the worker's generation). Refused up front: what the
/// worker cannot honour (JSON constraints, `ignore_eos`).
pub async fn generate(
    model: Arc<crate::registry::WorkerModel>,
    messages: &[tabagent_core::ChatMessage],
    prompt: Option<String>,
    params: &tabagent_core::GenerationParams,
) -> Result<tabagent_router::EventStream, tabagent_core::InferenceError> {
    use futures_util::StreamExt as _;
    use tabagent_core::stop::StopMatcher;
    use tabagent_core::{FinishReason, GenerationEvent, InferenceError, Usage};
    use tabagent_worker::pb;

    if params.constraint != tabagent_core::OutputConstraint::None {
        return Err(InferenceError::Unsupported {
            param: Some("response_format".into()),
            message: format!(
                "`{}` runs on Transformers in the ML worker, which cannot constrain output to JSON; use a GGUF model",
                model.id
            ),
        });
    }
    if params.ignore_eos {
        return Err(InferenceError::Unsupported {
            param: Some("ignore_eos".into()),
            message: format!("`{}` cannot ignore its end-of-text token", model.id),
        });
    }
    let unsupported = |param: &str, what: &str| {
        Err(InferenceError::unsupported(
            param,
            format!(
                "`{}` runs on Transformers in the ML worker, which takes text turns only ({what}); use a GGUF model",
                model.id
            ),
        ))
    };
    if !params.tools.specs.is_empty() || messages.iter().any(|m| !m.is_text()) {
        return unsupported("tools", "no tools, tool turns or images");
    }
    if params.logprobs.is_some() {
        return unsupported("logprobs", "no log probabilities");
    }
    let request = pb::GenerateRequest {
        model_id: model.id.clone(),
        messages: messages
            .iter()
            .map(|m| pb::ChatTurn {
                role: m.role.as_str().to_string(),
                content: m.content.clone(),
            })
            .collect(),
        prompt: prompt.unwrap_or_default(),
        max_tokens: params.max_tokens.unwrap_or(0),
        temperature: params.sampling.temperature,
        top_p: params.sampling.top_p,
        seed: params.sampling.seed.map(u64::from),
        stop: params.stop.clone(),
    };
    let chunks = model.worker.generate(request).await.map_err(|e| match e {
        tabagent_worker::WorkerError::InvalidInput(message) => InferenceError::InvalidRequest {
            param: None,
            message,
        },
        other => InferenceError::Unavailable(other.to_string()),
    })?;
    // The worker stops at a stop string too (Transformers' `stop_strings`), but leaves it in
    // its text: the matcher cuts it, and nothing after it is sent.
    let mut stops = StopMatcher::new(params.stop.clone());
    let mut stopped = false;
    let events = chunks
        .map(move |chunk| {
            // Holding the model keeps it loaded (and counted busy) while it generates.
            let _held = &model;
            let mut out = Vec::new();
            match chunk {
                Err(err) => out.push(GenerationEvent::Failed(InferenceError::Unavailable(
                    err.to_string(),
                ))),
                Ok(chunk) if chunk.finish_reason.is_empty() => {
                    if !stopped {
                        let step = stops.push(&chunk.text);
                        stopped = step.matched;
                        if !step.emit.is_empty() {
                            out.push(GenerationEvent::Text(step.emit));
                        }
                    }
                }
                Ok(chunk) => {
                    let rest = if stopped {
                        String::new()
                    } else {
                        stops.flush()
                    };
                    if !rest.is_empty() {
                        out.push(GenerationEvent::Text(rest));
                    }
                    out.push(GenerationEvent::Finished {
                        reason: if stopped {
                            FinishReason::Stop
                        } else {
                            FinishReason::parse(&chunk.finish_reason)
                        },
                        usage: Usage {
                            prompt_tokens: chunk.prompt_tokens,
                            completion_tokens: chunk.completion_tokens,
                            timings: None,
                        },
                    });
                }
            }
            futures_util::stream::iter(out)
        })
        .flatten();
    Ok(Box::pin(events))
}
