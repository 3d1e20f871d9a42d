//! `/v1/onnx`: any ONNX model named in `models.directories`, run on named tensors. `GET
//! /v1/onnx/{id}` loads it and reports its inputs and outputs; `POST /v1/onnx/run` runs it.
//! Tensors travel as JSON: `{"name", "shape", "type", "data"}` with `type` one of `float32`,
//! `int64`, `int32`, `uint8`, `bool` and `data` the values in row-major order.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tabagent_onnx::{NamedTensor, RunError, TensorInfo};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::registry::RegistryError;
use crate::state::AppState;

/// `POST /v1/onnx/run` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxRunRequest {
    /// A plain ONNX model (`GET /v1/models` shows `kind: onnx`).
    pub model: String,
    /// Every input the model declares, by name.
    #[schema(value_type = Vec<Object>, example = json!([{"name": "X", "shape": [3, 2], "type": "float32", "data": [1, 2, 3, 4, 5, 6]}]))]
    pub inputs: Vec<NamedTensor>,
}

/// `POST /v1/onnx/run` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnnxRunResponse {
    /// The model.
    pub model: String,
    /// Every output, in the model's order.
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<NamedTensor>,
}

/// `GET /v1/onnx/{id}` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnnxModelInfo {
    /// The model.
    pub model: String,
    /// Declared inputs (`null` dimensions are sized at run time).
    #[schema(value_type = Vec<Object>)]
    pub inputs: Vec<TensorInfo>,
    /// Declared outputs.
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<TensorInfo>,
    /// Sessions serving it concurrently.
    pub sessions: usize,
}

/// A loaded plain ONNX model's inputs and outputs. A `GET` loads nothing (a web page could
/// make one without the user knowing): load the model first (`POST /v1/models/{id}/load`, or
/// run it).
#[utoipa::path(
    get,
    path = "/v1/onnx/{id}",
    tag = "onnx",
    params(("id" = String, Path, description = "The model")),
    responses(
        (status = 200, body = OnnxModelInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not loaded", body = ErrorBody)
    )
)]
pub async fn describe(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OnnxModelInfo>, ApiError> {
    let registry = state.registry();
    let loaded = |id: &str| {
        registry
            .loaded()
            .into_iter()
            .find(|(loaded, _)| loaded == id)
    };
    let found = match loaded(&id) {
        Some(found) => found,
        None => {
            // Another name of the model (an alias, a pulled model's other spellings).
            let catalog = registry.catalog().clone();
            let wanted = id.clone();
            let entry = tokio::task::spawn_blocking(move || catalog.resolve(&wanted))
                .await
                .map_err(ApiError::internal)?
                .map_err(|err| ApiError::from(RegistryError::Catalog(err)))?
                .ok_or(RegistryError::NotFound(id))?;
            loaded(&entry.id).ok_or_else(|| {
                ApiError::conflict(
                    "model_not_loaded",
                    format!(
                        "`{0}` is not loaded; `POST /v1/models/{0}/load` loads it",
                        entry.id
                    ),
                )
            })?
        }
    };
    let (id, engine) = found;
    let model = engine.onnx(&id)?;
    Ok(Json(OnnxModelInfo {
        model: id,
        inputs: model.inputs().to_vec(),
        outputs: model.outputs().to_vec(),
        sessions: model.sessions(),
    }))
}

/// Runs a plain ONNX model on named tensors.
#[utoipa::path(
    post,
    path = "/v1/onnx/run",
    tag = "onnx",
    request_body = OnnxRunRequest,
    responses(
        (status = 200, body = OnnxRunResponse),
        (status = 400, description = "Tensors that do not fit the model", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<OnnxRunRequest>,
) -> Result<Json<OnnxRunResponse>, ApiError> {
    let acquired = state.registry().acquire(&request.model, None).await?;
    let model = acquired.engine.onnx(&acquired.id)?;
    let inputs = request.inputs;
    let outputs = tokio::task::spawn_blocking(move || model.run(inputs))
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| match err {
            RunError::BadInput(message) => ApiError::bad_request(Some("inputs"), message),
            // Inputs of the right names, types and shapes the model still rejects (values out
            // of range, say) or outputs this API cannot carry: the caller's to change.
            other => ApiError::bad_request(None, other.to_string()),
        })?;
    Ok(Json(OnnxRunResponse {
        model: acquired.id,
        outputs,
    }))
}
