//! `GET /v1/health` (liveness, with engine counters), `GET /v1/health/ready`, `GET /v1/config`.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::registry::Engine;
use crate::state::AppState;

/// Liveness and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: &'static str,
    /// Whether the default model is loaded.
    pub ready: bool,
    /// The default model.
    pub default_model: String,
    /// Why the default model is not loaded, when its load failed.
    pub default_model_error: Option<String>,
    /// Loaded models and their counters.
    pub models: Vec<LoadedModel>,
}

/// A loaded model's counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadedModel {
    /// Name.
    pub name: String,
    /// Sequences generating now.
    pub active: usize,
    /// Requests waiting for a sequence.
    pub queued: usize,
    /// Sequences decoded together.
    pub parallel: u32,
    /// Generations finished.
    pub completed_total: u64,
    /// Generations cancelled by a departed client.
    pub cancelled_total: u64,
    /// Generations failed in the engine.
    pub failed_total: u64,
    /// Tokens generated.
    pub generated_tokens_total: u64,
    /// Prompt tokens evaluated.
    pub prompt_tokens_total: u64,
    /// Prompt tokens served from a sequence's cache.
    pub cached_prompt_tokens_total: u64,
}

/// Liveness: answers while the process serves, with engine counters.
#[utoipa::path(get, path = "/v1/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    let mut models = Vec::new();
    for (name, engine) in state.registry().loaded() {
        let Engine::Llama(engine) = engine else {
            continue; // encoders have no generation counters
        };
        let stats = engine.stats();
        models.push(LoadedModel {
            name,
            active: stats.active,
            queued: stats.queued,
            parallel: engine.config().parallel,
            completed_total: stats.completed_total,
            cancelled_total: stats.cancelled_total,
            failed_total: stats.failed_total,
            generated_tokens_total: stats.generated_tokens_total,
            prompt_tokens_total: stats.prompt_tokens_total,
            cached_prompt_tokens_total: stats.cached_prompt_tokens_total,
        });
    }
    Json(Health {
        status: "ok",
        ready: state.is_ready(),
        default_model: state.config().models.default.clone(),
        default_model_error: state.startup_error(),
        models,
    })
}

/// Readiness: 200 once the default model is loaded, 503 before (or if its load failed).
#[utoipa::path(
    get,
    path = "/v1/health/ready",
    tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready", body = ErrorBody))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_ready() {
        return Ok(Json(serde_json::json!({"ready": true})));
    }
    match state.startup_error() {
        Some(error) => Err(ApiError::unavailable("default_model_unavailable", error)),
        None => Err(ApiError::not_ready()),
    }
}

/// The effective configuration, secrets redacted, and what ONNX Runtime found on this machine
/// (`onnx_runtime`: the library, its version, and each execution provider chosen or why not).
#[utoipa::path(get, path = "/v1/config", tag = "health", responses((status = 200, description = "Effective configuration")))]
pub async fn config(State(state): State<AppState>) -> Json<serde_json::Value> {
    let runtime_config = state.registry().encoder_loading().runtime.clone();
    let onnx = tokio::task::spawn_blocking(move || crate::hardware::onnx_report(&runtime_config))
        .await
        .unwrap_or_else(|_| serde_json::json!({"error": "interrupted"}));
    let mut value = state.config().redacted_json();
    if let Some(object) = value.as_object_mut() {
        object.insert("onnx_runtime".to_string(), onnx);
    }
    Json(value)
}

/// Each routed provider's health: breaker state and moving averages.
#[utoipa::path(
    get,
    path = "/v1/router",
    tag = "health",
    responses((status = 200, description = "`{\"providers\": [{name, breaker, ttft_seconds, latency_seconds, error_rate}]}`"))
)]
pub async fn router_status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let providers = state.router().status();
    Json(serde_json::json!({ "providers": providers }))
}

/// What the router has learnt: each (provider, model) arm's Beta posterior and pulls.
#[utoipa::path(
    get,
    path = "/v1/analytics",
    tag = "health",
    responses((status = 200, description = "`{\"arms\": [{provider, model, alpha, beta, pulls, mean}]}`, best mean first"))
)]
pub async fn analytics(State(state): State<AppState>) -> Json<serde_json::Value> {
    let arms: Vec<serde_json::Value> = state
        .router()
        .analytics()
        .arms()
        .into_iter()
        .map(|arm| {
            let mean = arm.mean();
            let mut value = serde_json::to_value(arm).unwrap_or_default();
            value["mean"] = serde_json::json!(mean);
            value
        })
        .collect();
    Json(serde_json::json!({ "arms": arms }))
}

/// Which task to ask about.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct TaskQuery {
    /// A route with parameter sets.
    pub task: String,
}

/// The best settings learnt so far for a task (a route with parameter sets): the provider,
/// model and parameter set whose posterior mean is highest, with the set's parameters; before
/// anything was learnt, the route's first set.
#[utoipa::path(
    get,
    path = "/v1/analytics/optimize",
    tag = "health",
    params(TaskQuery),
    responses(
        (status = 200, description = "`{task, provider, model, parameter_set, parameters, mean, pulls}`"),
        (status = 400, description = "No `task` given", body = ErrorBody),
        (status = 404, description = "No route with parameter sets by that name", body = ErrorBody),
    )
)]
pub async fn optimize(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|_| {
        ApiError::bad_request(
            Some("task"),
            "give the task as `?task=NAME` (a route with parameter sets)",
        )
    })?;
    let sets = state
        .config()
        .router
        .routes
        .get(&query.task)
        .map(|r| r.parameter_sets.as_slice())
        .unwrap_or_default();
    let Some(first) = sets.first() else {
        return Err(ApiError::not_found(
            "task_not_found",
            "task",
            format!(
                "no route named `{}` has parameter sets (router.routes.NAME.parameter_sets)",
                query.task
            ),
        ));
    };
    let best = state.router().analytics().best_for_task(&query.task);
    let set = best
        .as_ref()
        .and_then(|arm| {
            sets.iter()
                .find(|s| Some(&s.name) == arm.parameter_set.as_ref())
        })
        .unwrap_or(first);
    Ok(Json(serde_json::json!({
        "task": query.task,
        "provider": best.as_ref().map(|a| &a.provider),
        "model": best.as_ref().map(|a| &a.model),
        "parameter_set": set.name,
        "parameters": set,
        "mean": best.as_ref().map(|a| a.mean()),
        "pulls": best.as_ref().map_or(0, |a| a.pulls),
    })))
}

/// A caller's score for an answer.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// The answer's `id` (`chatcmpl-…`).
    pub id: String,
    /// How good it was, from 0 to 1.
    pub score: f64,
}

/// Scores an answer: one more observation for the provider and model that gave it, saved
/// before this returns.
#[utoipa::path(
    post,
    path = "/v1/feedback",
    tag = "health",
    request_body = Feedback,
    responses(
        (status = 200, description = "The arm's posterior after the feedback"),
        (status = 400, description = "Score outside 0 to 1", body = ErrorBody),
        (status = 404, description = "No remembered answer with that id", body = ErrorBody),
    )
)]
pub async fn feedback(
    State(state): State<AppState>,
    super::json::ApiJson(feedback): super::json::ApiJson<Feedback>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use tabagent_router::FeedbackError;
    // Saving the posteriors syncs a file: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || {
        state
            .router()
            .analytics()
            .feedback(&feedback.id, feedback.score)
    })
    .await
    .map_err(ApiError::internal)?;
    match outcome {
        Ok(arm) => Ok(Json(serde_json::to_value(arm).unwrap_or_default())),
        Err(FeedbackError::BadScore) => Err(ApiError::bad_request(
            Some("score"),
            "score must be between 0 and 1",
        )),
        Err(err @ FeedbackError::UnknownAnswer(_)) => Err(ApiError::not_found(
            "answer_not_found",
            "id",
            err.to_string(),
        )),
        Err(err @ FeedbackError::Save(_)) => Err(ApiError::internal(err)),
    }
}

/// The Python ML worker: whether it runs, its process, restarts, calls in flight, the models it
/// holds.
#[utoipa::path(get, path = "/v1/worker", tag = "health", responses((status = 200, description = "`{mode, running, startup_ms, downtime_ms, pid, restarts, in_flight, status, models}`")))]
pub async fn worker_status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mode = serde_json::to_value(state.config().worker.mode).unwrap_or_default();
    let Ok(worker) = state.worker() else {
        return Json(serde_json::json!({
            "mode": mode, "running": false, "pid": null, "restarts": 0, "in_flight": 0,
            "status": "not set up: run `tabagent worker setup`", "models": [],
        }));
    };
    let models: Vec<serde_json::Value> = if worker.is_running() {
        worker
            .models()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.model_id,
                    "kind": tabagent_worker::pb::ModelKind::try_from(m.kind)
                        .map(|k| k.as_str_name().trim_start_matches("MODEL_KIND_").to_ascii_lowercase())
                        .unwrap_or_default(),
                    "ram_bytes": m.ram_bytes,
                    "vram_bytes": m.vram_bytes,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let last_start = worker.last_start();
    Json(serde_json::json!({
        "mode": mode,
        "running": worker.is_running(),
        // How long the serving worker took to start, and how long the server was without one
        // before it (from the previous worker's death to this one serving).
        "startup_ms": last_start.map(|(startup, _)| startup.as_millis() as u64),
        "downtime_ms": last_start.and_then(|(_, down)| down).map(|d| d.as_millis() as u64),
        "pid": worker.pid(),
        "restarts": worker.restarts(),
        "in_flight": worker.in_flight(),
        "status": worker.status().unwrap_or_else(|| "serving".into()),
        "models": models,
    }))
}
