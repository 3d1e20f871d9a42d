//! `GET /v1/models`, `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;
use tabagent_models::store::ModelEntry;

use super::error::{ApiError, ErrorBody};
use super::wire::{ModelList, ModelObject};
use crate::registry::RegistryError;
use crate::state::AppState;

/// Lists local models.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, body = ModelList)))]
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let entries = read_store(&state).await?;
    let data = entries
        .iter()
        .map(|entry| model_object(&state, entry))
        .collect();
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

/// Describes one model.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "openai",
    params(("id" = String, Path, description = "Model name")),
    responses((status = 200, body = ModelObject), (status = 404, body = ErrorBody))
)]
pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let entries = read_store(&state).await?;
    let entry = entries
        .iter()
        .find(|entry| entry.name == id)
        .ok_or(RegistryError::NotFound(id))?;
    Ok(Json(model_object(&state, entry)))
}

async fn read_store(state: &AppState) -> Result<Vec<ModelEntry>, ApiError> {
    let store = state.registry().store().clone();
    tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| ApiError::from(RegistryError::Store(err)))
}

fn model_object(state: &AppState, entry: &ModelEntry) -> ModelObject {
    ModelObject {
        id: entry.name.clone(),
        object: "model",
        created: entry.imported_at,
        owned_by: "tabagent",
        architecture: entry.architecture.clone(),
        size_bytes: entry.size_bytes,
        context_length: entry.context_length,
        has_chat_template: entry.has_chat_template,
        loaded: state.registry().is_loaded(&entry.name),
    }
}
