//! `POST /v1/models/pull` (progress as server-sent events) and `DELETE /v1/models/{id}`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use tabagent_hub::repo::Selector;
use tabagent_hub::{ModelSpec, ProgressEvent, RepoPath, Revision};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::callers::Caller;
use crate::keep_alive::KeepAlive;
use crate::registry::RegistryError;
use crate::state::AppState;

/// What to pull.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `OWNER/REPO`, `OWNER/REPO:QUANT` or `OWNER/REPO:FILE`. Never a URL: the Hub endpoint
    /// comes from the server's configuration.
    pub model: String,
    /// Branch, tag or commit (default `main`).
    #[serde(default)]
    pub revision: Option<String>,
    /// Send progress as server-sent events (default true).
    #[serde(default)]
    pub stream: Option<bool>,
}

/// One progress report, or the final result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PullStatus {
    /// `resolving`, `downloading`, `verifying`, `success`.
    pub status: &'static str,
    /// The model id to use in requests (on `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The file in the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Bytes present so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// Bytes in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The snapshot's commit (on `success`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl PullStatus {
    fn new(status: &'static str) -> Self {
        Self {
            status,
            model: None,
            file: None,
            completed: None,
            total: None,
            commit: None,
        }
    }
}

/// Downloads a model from the Hugging Face Hub into the Hugging Face cache.
#[utoipa::path(
    post,
    path = "/v1/models/pull",
    tag = "models",
    request_body = PullRequest,
    responses(
        (status = 200, description = "Progress events (text/event-stream) ending in `success`, or the final status as JSON when `stream` is false", body = PullStatus),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)
    )
)]
pub async fn pull(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(request): ApiJson<PullRequest>,
) -> Result<Response, ApiError> {
    let caller = caller.map(|Extension(caller)| caller);
    let receiver = start(
        &state,
        caller.as_ref(),
        &request.model,
        request.revision.as_deref(),
    )
    .await?;
    if request.stream == Some(false) {
        let mut receiver = receiver;
        while let Some(status) = receiver.recv().await {
            let status = status?;
            if status.status == "success" {
                return Ok(Json(status).into_response());
            }
        }
        return Err(ApiError::internal("the pull task ended without a result"));
    }
    let stream = UnboundedReceiverStream::new(receiver).map(|status| {
        let data = match status {
            Ok(status) => serde_json::to_string(&status).unwrap_or_default(),
            Err(err) => err.to_json(),
        };
        Ok::<_, Infallible>(Event::default().data(data))
    });
    Ok(Sse::new(stream).into_response())
}

/// Progress of a pull, ending in `success` or an error.
pub type PullProgress = mpsc::UnboundedReceiver<Result<PullStatus, ApiError>>;

/// Starts downloading `model` (`OWNER/REPO[:QUANT|:FILE]`) at `revision`: the file is resolved
/// first (its errors come back here), then the download runs on its own, reporting to the
/// receiver; a client that goes away leaves it to finish (a later pull finds it in the cache,
/// or resumes it).
pub async fn start(
    state: &AppState,
    caller: Option<&Caller>,
    model: &str,
    revision: Option<&str>,
) -> Result<PullProgress, ApiError> {
    let spec = ModelSpec::parse(model)?;
    let slot = take_pull_slot(state, caller)?;
    let (revision, client) = hub_request(state, revision, caller)?;
    // Resolving the file happens before the response starts, so its errors are real statuses.
    // An encoder repository (no GGUF) brings the files read beside its weights, from one commit.
    let mut companions = Vec::new();
    let file = match &spec.selector {
        Selector::File(path) => path.clone(),
        Selector::OnlyGguf | Selector::Quant(_) => {
            let files = client.repo_info(&spec.repo, &revision).await?.files;
            match crate::catalog::encoder_files(&files) {
                Some((weights, with)) if spec.selector == Selector::OnlyGguf => {
                    companions = with;
                    RepoPath::parse(&weights)?
                }
                _ => RepoPath::parse(spec.choose(&files)?)?,
            }
        }
    };
    let (events, receiver) = mpsc::unbounded_channel::<Result<PullStatus, ApiError>>();
    let catalog = state.registry().catalog().clone();
    tokio::spawn(async move {
        // Held until the download ends, however it ends.
        let _slot = slot;
        let shown = file.to_string();
        let reporter = Reporter::new(events.clone(), shown.clone());
        let mut result = client
            .download(&spec.repo, &revision, &file, &reporter)
            .await;
        if let Ok(got) = &result {
            for companion in &companions {
                let fetched = match (Revision::parse(&got.commit), RepoPath::parse(companion)) {
                    (Ok(commit), Ok(path)) => client
                        .download(&spec.repo, &commit, &path, &())
                        .await
                        .map(|_| ()),
                    (Err(err), _) | (_, Err(err)) => Err(err),
                };
                if let Err(err) = fetched {
                    result = Err(err);
                    break;
                }
            }
        }
        let outcome = match result {
            Ok(got) => {
                let path = got.path.clone();
                let listed = tokio::task::spawn_blocking(move || catalog.list()).await;
                let id = listed
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|models| {
                        models
                            .into_iter()
                            .find(|m| m.path == path || path.parent() == Some(m.path.as_path()))
                    })
                    .map_or_else(|| format!("{}:{shown}", spec.repo), |m| m.id);
                Ok(PullStatus {
                    model: Some(id),
                    file: Some(shown),
                    completed: Some(got.size),
                    total: Some(got.size),
                    commit: Some(got.commit),
                    ..PullStatus::new("success")
                })
            }
            Err(err) => Err(ApiError::from(err)),
        };
        let _ = events.send(outcome);
    });
    Ok(receiver)
}

/// The revision a request names (default `main`) and a Hub client from the server's settings.
/// A place among the downloads the API runs at once, for `caller`.
pub(super) fn take_pull_slot(
    state: &AppState,
    caller: Option<&Caller>,
) -> Result<crate::pull_slots::PullSlot, ApiError> {
    let name = caller.map_or(tabagent_router::ANONYMOUS, |caller| &caller.0);
    state
        .pulls()
        .take(name)
        .map_err(|full| ApiError::too_many_requests("too_many_pulls", full.to_string()))
}

/// The Hub client uses the server's token only for an admin caller.
pub(super) fn hub_request(
    state: &AppState,
    revision: Option<&str>,
    caller: Option<&Caller>,
) -> Result<(Revision, tabagent_hub::HubClient), ApiError> {
    let revision = match revision {
        Some(revision) => Revision::parse(revision)?,
        None => Revision::main(),
    };
    let trusted = state.callers().is_admin(caller);
    let client = state.config().hub_client_for(trusted).map_err(|err| {
        ApiError::unavailable(
            "hub_misconfigured",
            format!("the Hub client cannot start: {err:#}"),
        )
    })?;
    Ok((revision, client))
}

/// Turns download progress into at most ~100 `downloading` events per file.
struct Reporter {
    events: mpsc::UnboundedSender<Result<PullStatus, ApiError>>,
    file: String,
    progress: std::sync::Mutex<(u64, u64, u64)>, // (completed, total, last reported)
}

impl Reporter {
    fn new(events: mpsc::UnboundedSender<Result<PullStatus, ApiError>>, file: String) -> Self {
        let _ = events.send(Ok(PullStatus {
            file: Some(file.clone()),
            ..PullStatus::new("resolving")
        }));
        Self {
            events,
            file,
            progress: std::sync::Mutex::new((0, 0, 0)),
        }
    }

    fn send(&self, status: &'static str, completed: u64, total: u64) {
        let _ = self.events.send(Ok(PullStatus {
            file: Some(self.file.clone()),
            completed: Some(completed),
            total: Some(total),
            ..PullStatus::new(status)
        }));
    }
}

impl tabagent_hub::Progress for Reporter {
    fn event(&self, event: ProgressEvent) {
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            ProgressEvent::Started { size, resumed, .. } => {
                *progress = (resumed, size, resumed);
                self.send("downloading", resumed, size);
            }
            ProgressEvent::Advanced { bytes } => {
                progress.0 += bytes;
                let (completed, total, last) = *progress;
                if completed - last >= (total / 100).max(1 << 20) || completed == total {
                    progress.2 = completed;
                    self.send("downloading", completed, total);
                }
            }
            ProgressEvent::Cached { size, .. } => self.send("downloading", size, size),
            ProgressEvent::Verifying => self.send("verifying", progress.0, progress.1),
            ProgressEvent::Retrying { .. } | ProgressEvent::Done => {}
        }
    }
}

/// Removes a model's file from this machine.
#[utoipa::path(
    delete,
    path = "/v1/models/{id}",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn delete_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = remove(&state, id).await?;
    Ok(Json(
        serde_json::json!({ "id": id, "object": "model", "deleted": true }),
    ))
}

/// Removes the model `id` names from this machine (refused while it is loaded); its id.
pub async fn remove(state: &AppState, id: String) -> Result<String, ApiError> {
    let catalog = state.registry().catalog().clone();
    let wanted = id.clone();
    let model = tokio::task::spawn_blocking(move || catalog.resolve(&wanted))
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| ApiError::from(RegistryError::Catalog(err)))?
        .ok_or_else(|| RegistryError::NotFound(id.clone()))?;
    if state.registry().is_loaded(&model.id) {
        return Err(ApiError::conflict(
            "model_loaded",
            format!(
                "the model `{}` is loaded; it cannot be deleted while it serves",
                model.id
            ),
        ));
    }
    let catalog = state.registry().catalog().clone();
    let removed = model.clone();
    tokio::task::spawn_blocking(move || catalog.remove(&removed))
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| ApiError::unavailable("model_cache_error", err.to_string()))?;
    Ok(model.id)
}

/// `POST /v1/models/{id}/load` body (optional).
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct LoadRequest {
    /// Seconds, or a duration such as `"10m"`, that the model stays loaded once idle; negative:
    /// until unloaded; 0: unloaded as soon as it is idle. Default: `models.keep_alive_secs`.
    #[schema(value_type = Option<Object>)]
    pub keep_alive: Option<serde_json::Value>,
}

/// Loads (`POST /v1/models/{id}/load`) or unloads (`POST /v1/models/{id}/unload`) a model. The
/// id may contain `/`, so both come through one route and are told apart by the last segment.
#[utoipa::path(
    post,
    path = "/v1/models/{id}/load",
    tag = "models",
    params(("id" = String, Path, description = "Model id")),
    request_body(content = Option<LoadRequest>, description = "Optional: how long the model stays loaded once idle"),
    responses(
        (status = 200, description = "Loaded (also `/unload`: unloaded)"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn model_action(
    State(state): State<AppState>,
    Path(path): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(id) = path.strip_suffix("/load") {
        let request = if body.iter().all(u8::is_ascii_whitespace) {
            LoadRequest::default()
        } else {
            super::json::parse::<LoadRequest>(&body)?
        };
        let keep_alive = super::convert::keep_alive(request.keep_alive.as_ref())?;
        let registry = state.registry();
        let acquired = registry.acquire(id, keep_alive).await?;
        drop(acquired.engine);
        let memory = match registry.state(&acquired.id) {
            crate::registry::ModelState::Loaded(bytes) => Some(bytes),
            _ => None,
        };
        let keep_alive = registry.keep_alive(&acquired.id).map(KeepAlive::as_secs);
        return Ok(Json(serde_json::json!({
            "id": acquired.id, "state": "loaded", "memory_bytes": memory,
            "keep_alive_secs": keep_alive,
        })));
    }
    if let Some(id) = path.strip_suffix("/unload") {
        let was_loaded = state.registry().unload(id).await?;
        return Ok(Json(serde_json::json!({
            "id": id, "state": "on_disk", "unloaded": was_loaded,
        })));
    }
    Err(ApiError::route_not_found(&format!("/v1/models/{path}")))
}
