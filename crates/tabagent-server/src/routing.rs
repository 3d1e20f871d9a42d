//! The router in the server: the in-process engine as one of its providers (`local`), and the
//! choice between serving a chat request here directly and routing it.
//!
//! A request naming a local model is served directly, as before (conversations, keep-alive and
//! all). One naming a remote model, an alias, a route (`auto`, `fast`, configured tasks) or
//! `provider/model` goes through the router, which may still pick the local engine.

use std::sync::Arc;

use tabagent_core::InferenceError;
use tabagent_router::{BoxFuture, ChatRequest, EventStream, Provider, Router, TryError};

use crate::config::Config;
use crate::error::ServiceError;
use crate::generation::local;
use crate::registry::{ModelRegistry, RegistryError};
use crate::state::AppState;

/// The in-process engine, seen by the router.
pub struct LocalProvider {
    registry: Arc<ModelRegistry>,
    default_model: String,
}

fn refused(err: RegistryError) -> TryError {
    match err {
        RegistryError::NotFound(_) | RegistryError::WrongKind { .. } => {
            TryError::Caller(InferenceError::invalid("model", err.to_string()))
        }
        other => TryError::Provider {
            message: format!("{}: {other}", tabagent_router::LOCAL),
            retry_after: None,
        },
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &str {
        tabagent_router::LOCAL
    }

    fn serves(&self, model: &str) -> bool {
        matches!(self.registry.catalog().resolve(model), Ok(Some(_)))
    }

    fn default_model(&self) -> Option<String> {
        Some(self.default_model.clone())
    }

    fn start<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, TryError>> {
        Box::pin(async move {
            let acquired = self.registry.acquire(model, None).await.map_err(refused)?;
            let input = match &request.prompt {
                Some(prompt) => local::Input::Prompt(prompt.clone()),
                None => local::Input::Chat(request.messages.clone()),
            };
            let class = request
                .ticket
                .as_ref()
                .map(local::job_class)
                .unwrap_or_default();
            let events = local::start(acquired, input, request.params.clone(), class)
                .await
                .map_err(failed)?;
            Ok(Box::pin(events) as EventStream)
        })
    }
}

/// A local failure as a try's: the caller's mistakes end the request; a full queue, a missing
/// engine or a broken one let the router try another provider.
fn failed(err: ServiceError) -> TryError {
    let provider = |err: &dyn std::fmt::Display, retry_after| TryError::Provider {
        message: format!("{}: {err}", tabagent_router::LOCAL),
        retry_after,
    };
    match err {
        ServiceError::Registry(err) => refused(err),
        ServiceError::Inference(err @ InferenceError::QueueFull { .. }) => {
            provider(&err, Some(std::time::Duration::from_secs(1)))
        }
        ServiceError::Inference(
            err @ (InferenceError::Unavailable(_) | InferenceError::Internal(_)),
        ) => provider(&err, None),
        ServiceError::Inference(caller) => TryError::Caller(caller),
        other => provider(&other, None),
    }
}

/// The router for `config`: the configured remote providers and the local engine over
/// `registry`, its gates in `scheduler`.
pub fn router(
    config: &Config,
    registry: &Arc<ModelRegistry>,
    scheduler: &Arc<tabagent_router::Scheduler>,
) -> Result<Router, tabagent_router::ConfigError> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| tabagent_router::ConfigError(format!("HTTP client: {e}")))?;
    let local = LocalProvider {
        registry: Arc::clone(registry),
        default_model: config.models.default.clone(),
    };
    Router::new(config.router.clone(), Some(Arc::new(local)), client)?
        .with_scheduler(Arc::clone(scheduler))
        .with_analytics_file(config.storage.data_dir.join("router-analytics.json"))
}

/// The router's plan for a chat request naming `model`, or `None` when it goes straight to the
/// local engine: a model the router names (an alias, a route, `provider/model`) or only remote
/// providers serve is routed; a local model is served directly.
pub fn plan(state: &AppState, model: &str) -> Option<tabagent_router::Plan> {
    let router = state.router();
    let config = &state.config().router;
    let named_by_router = config.aliases.contains_key(model)
        || config.routes.contains_key(model)
        || matches!(model, "auto" | "fast")
        || model
            .split_once('/')
            .is_some_and(|(p, _)| config.providers.iter().any(|c| c.name == p));
    if named_by_router {
        return Some(router.plan(model));
    }
    if !config
        .providers
        .iter()
        .any(|p| p.models.iter().any(|m| m == model))
    {
        return None;
    }
    if matches!(state.registry().catalog().resolve(model), Ok(Some(_))) {
        return None;
    }
    Some(router.plan(model))
}

/// Whether `model` names (directly or through an alias) a route with parameter sets: its
/// answers depend on the set the bandit draws, so they are not cached (a cached answer would
/// replay one set's for all and hide the others from the bandit).
pub fn tunes(state: &AppState, model: &str) -> bool {
    state
        .config()
        .router
        .route(model)
        .is_some_and(|route| !route.parameter_sets.is_empty())
}

/// Probes the remote providers every `router.probe_interval_secs` (the first time at once, so a
/// provider that is down is known before the first request), until the server stops.
pub fn start_probes(state: &AppState) {
    let Some(period) = state.router().probe_interval() else {
        return;
    };
    if state.config().router.providers.is_empty() {
        return;
    }
    let weak = state.downgrade();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(state) = weak.upgrade() else { return };
            state.router().probe().await;
        }
    });
}
