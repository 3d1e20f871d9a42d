//! `GET /v1/models`, `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::wire::{ModelList, ModelObject};
use crate::catalog::{LocalModel, Source};
use crate::registry::{ModelState, RegistryError};
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
    let entry = entries.iter().find(|entry| entry.id == id).cloned();
    let entry = match entry {
        Some(entry) => entry,
        // Other spellings of a pulled model (`owner/name:q4_k_m`, `owner/name:FILE`).
        None => {
            let catalog = state.registry().catalog().clone();
            let wanted = id.clone();
            tokio::task::spawn_blocking(move || catalog.resolve(&wanted))
                .await
                .map_err(ApiError::internal)?
                .map_err(|err| ApiError::from(RegistryError::Catalog(err)))?
                .ok_or(RegistryError::NotFound(id))?
        }
    };
    let mut object = model_object(&state, &entry);
    // One header read for one model; the listing skips it.
    let path = entry.path.clone();
    if let Ok(Ok(info)) =
        tokio::task::spawn_blocking(move || tabagent_models::gguf::inspect_file(&path)).await
    {
        object.parameters = Some(info.parameter_count());
        object.quantization = info.quantization();
    }
    Ok(Json(object))
}

async fn read_store(state: &AppState) -> Result<Vec<LocalModel>, ApiError> {
    let catalog = state.registry().catalog().clone();
    tokio::task::spawn_blocking(move || catalog.list())
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| ApiError::from(RegistryError::Catalog(err)))
}

fn model_object(state: &AppState, entry: &LocalModel) -> ModelObject {
    ModelObject {
        id: entry.id.clone(),
        object: "model",
        created: entry.created,
        owned_by: match &entry.source {
            Source::Imported { .. } => "tabagent".to_string(),
            Source::Hub { repo, .. } => repo.split('/').next().unwrap_or("hub").to_string(),
            Source::Directory => "local".to_string(),
            Source::ImportedDirectory => "tabagent".to_string(),
        },
        kind: entry.kind.name(),
        engine: entry.kind.backend().name(),
        architecture: entry.architecture.clone(),
        size_bytes: entry.size_bytes,
        context_length: entry.context_length,
        has_chat_template: entry.has_chat_template,
        loaded: state.registry().is_loaded(&entry.id),
        state: match state.registry().state(&entry.id) {
            ModelState::OnDisk => "on_disk",
            ModelState::Loading => "loading",
            ModelState::Loaded(_) => "loaded",
        },
        memory_bytes: match state.registry().state(&entry.id) {
            ModelState::Loaded(bytes) => Some(bytes),
            _ => None,
        },
        keep_alive_secs: state
            .registry()
            .keep_alive(&entry.id)
            .map(crate::keep_alive::KeepAlive::as_secs),
        parameters: None,
        quantization: None,
    }
}
