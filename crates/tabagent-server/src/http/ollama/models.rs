//! Ollama's model endpoints over tabagent's catalog, registry, embedding service and Hub
//! client: `tags`, `show`, `ps`, `pull`, `delete`, `embed`, `embeddings`.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::super::error::ApiError;
use super::{json_line, model_name, ndjson, options, rfc3339, OllamaError, OllamaJson};
use crate::catalog::{LocalModel, ModelKind};
use crate::embedding::{self, Input};
use crate::registry::RegistryError;
use crate::state::AppState;

/// Most inputs one `/api/embed` request may hold (as `/v1/embeddings`).
fn max_inputs(state: &AppState) -> usize {
    state.config().onnx.max_inputs_per_request
}

/// A body naming a model (`model`, or the older `name`).
#[derive(Debug, Deserialize)]
pub struct ModelBody {
    model: Option<String>,
    name: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)] // read by serde only: Ollama clients send it
    insecure: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)] // read by serde only: Ollama clients send it
    verbose: Option<bool>,
}

impl ModelBody {
    fn model(&self) -> Result<String, ApiError> {
        self.model
            .as_deref()
            .or(self.name.as_deref())
            .map(model_name)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request(Some("model"), "`model` is required"))
    }
}

/// `GET /api/tags`: the models on this machine.
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, OllamaError> {
    let models = list(&state).await?;
    let models: Vec<Value> = models.iter().map(|m| listing(m, None)).collect();
    Ok(Json(json!({ "models": models })))
}

/// `GET /api/ps`: the models loaded now.
pub async fn ps(State(state): State<AppState>) -> Result<Json<Value>, OllamaError> {
    let models = list(&state).await?;
    let registry = state.registry();
    let now = SystemTime::now();
    let running: Vec<Value> = models
        .iter()
        .filter(|m| registry.is_loaded(&m.id))
        .map(|m| {
            let size = match registry.state(&m.id) {
                crate::registry::ModelState::Loaded(bytes) => bytes,
                _ => m.size_bytes,
            };
            // Kept or busy: Ollama shows a far-off time for models that stay.
            let expires = match registry.unloads_in(&m.id).flatten() {
                Some(left) => now + left,
                None => now + Duration::from_secs(10 * 365 * 24 * 3600),
            };
            let mut entry = listing(m, Some(size));
            entry["expires_at"] = json!(rfc3339(expires));
            entry["size_vram"] = json!(0);
            entry["context_length"] = json!(m.context_length);
            entry
        })
        .collect();
    Ok(Json(json!({ "models": running })))
}

/// `POST /api/show`: a model's details, template and capabilities.
pub async fn show(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<Json<Value>, OllamaError> {
    let model = find(&state, &body.model()?).await?;
    let mut shown = Map::new();
    let mut info = Map::new();
    let mut capabilities = Vec::new();
    let mut template = String::new();
    let mut details = details(&model);
    if model.kind == ModelKind::Gguf {
        let path = model.path.clone();
        let gguf = tokio::task::spawn_blocking(move || tabagent_models::gguf::inspect_file(&path))
            .await
            .map_err(ApiError::internal)?
            .map_err(|source| {
                ApiError::from(RegistryError::Load {
                    name: model.id.clone(),
                    source: tabagent_llama::LoadError::InvalidFile {
                        path: model.path.display().to_string(),
                        source,
                    },
                })
            })?;
        let arch = gguf.architecture().unwrap_or("unknown").to_string();
        info.insert("general.architecture".into(), json!(arch));
        info.insert(
            "general.parameter_count".into(),
            json!(gguf.parameter_count()),
        );
        if let Some(context) = gguf.context_length() {
            info.insert(format!("{arch}.context_length"), json!(context));
        }
        details["parameter_size"] = json!(parameter_size(gguf.parameter_count()));
        let quantization = gguf
            .file_type()
            .map(str::to_string)
            .or_else(|| gguf.quantization());
        if let Some(quantization) = quantization {
            details["quantization_level"] = json!(quantization);
        }
        capabilities.push("completion");
        if let Some(source) = gguf.chat_template() {
            template = source.to_string();
            let tools = tabagent_models::chat_template::ChatTemplate::new(source, "", "")
                .map(|t| t.tool_format() != tabagent_models::tool_calls::ToolFormat::Unsupported)
                .unwrap_or(false);
            if tools {
                capabilities.push("tools");
            }
        }
    } else {
        match model.kind.name() {
            "llm" => capabilities.push("completion"),
            "embedding" => capabilities.push("embedding"),
            _ => {}
        }
    }
    shown.insert("modelfile".into(), json!(""));
    shown.insert("parameters".into(), json!(""));
    shown.insert("template".into(), json!(template));
    shown.insert("details".into(), details);
    shown.insert("model_info".into(), Value::Object(info));
    shown.insert("capabilities".into(), json!(capabilities));
    shown.insert("modified_at".into(), json!(modified_at(&model)));
    Ok(Json(Value::Object(shown)))
}

/// `POST /api/pull`: downloads from the Hugging Face Hub (`OWNER/REPO:QUANT`), reporting
/// progress as NDJSON (`"stream": false`: the last status only).
pub async fn pull(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::callers::Caller>>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<Response, OllamaError> {
    let caller = caller.map(|axum::Extension(caller)| caller);
    let mut progress =
        super::super::pull::start(&state, caller.as_ref(), &body.model()?, None).await?;
    let status = |status: super::super::pull::PullStatus| {
        let mut line = json!({ "status": match status.status {
            "resolving" => "pulling manifest".to_string(),
            "downloading" => format!("pulling {}", status.file.as_deref().unwrap_or("")),
            "verifying" => "verifying sha256 digest".to_string(),
            other => other.to_string(),
        }});
        if status.status == "downloading" {
            line["digest"] = json!(status.file);
            line["total"] = json!(status.total);
            line["completed"] = json!(status.completed);
        }
        line
    };
    if body.stream == Some(false) {
        while let Some(next) = progress.recv().await {
            let next = next?;
            if next.status == "success" {
                return Ok(Json(status(next)).into_response());
            }
        }
        return Err(ApiError::internal("the pull task ended without a result").into());
    }
    let lines =
        tokio_stream::wrappers::UnboundedReceiverStream::new(progress).map(
            move |next| match next {
                Ok(next) => json_line(&status(next)),
                Err(err) => OllamaError::line(&err),
            },
        );
    Ok(ndjson(lines))
}

/// `DELETE /api/delete`.
pub async fn delete(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<StatusCode, OllamaError> {
    super::super::pull::remove(&state, body.model()?).await?;
    Ok(StatusCode::OK)
}

/// `POST /api/embed` body.
#[derive(Debug, Deserialize)]
pub struct EmbedBody {
    model: String,
    input: Value,
    truncate: Option<bool>,
    dimensions: Option<u64>,
    keep_alive: Option<Value>,
    options: Option<Value>,
}

/// `POST /api/embed`: unit vectors for a text or texts.
pub async fn embed(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<EmbedBody>,
) -> Result<Json<Value>, OllamaError> {
    let started = std::time::Instant::now();
    let texts = match &body.input {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_request(
                    Some("input"),
                    "`input` must be a string or a list of strings",
                )
            })?,
        _ => {
            return Err(ApiError::bad_request(
                Some("input"),
                "`input` must be a string or a list of strings",
            )
            .into())
        }
    };
    if texts.is_empty() || texts.len() > max_inputs(&state) {
        return Err(ApiError::bad_request(
            Some("input"),
            format!("`input` holds 1 to {} texts", max_inputs(&state)),
        )
        .into());
    }
    options::params(body.options.as_ref())?;
    let keep_alive = options::keep_alive(body.keep_alive.as_ref())?;
    let model = model_name(&body.model);
    let acquired = state.registry().acquire(&model, keep_alive).await?;
    let embedded = embedding::embed(
        acquired.engine,
        &acquired.id,
        Input::Texts(texts),
        body.truncate.unwrap_or(true),
    )
    .await?;
    let mut vectors = embedded.vectors;
    for vector in &mut vectors {
        if let Some(keep) = body.dimensions {
            let keep = usize::try_from(keep).unwrap_or(usize::MAX);
            if keep == 0 || keep > vector.len() {
                return Err(ApiError::bad_request(
                    Some("dimensions"),
                    format!("`dimensions` must be between 1 and {}", vector.len()),
                )
                .into());
            }
            vector.truncate(keep);
        }
        // Ollama's vectors are unit length.
        tabagent_onnx::encoder::normalize(vector);
    }
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(Json(json!({
        "model": model,
        "embeddings": vectors,
        "total_duration": nanos,
        "load_duration": 0,
        "prompt_eval_count": embedded.tokens,
    })))
}

/// `POST /api/embeddings` body (the older endpoint).
#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    model: String,
    prompt: String,
    keep_alive: Option<Value>,
    options: Option<Value>,
}

/// `POST /api/embeddings`: one vector, as the model gives it.
pub async fn embeddings(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<EmbeddingsBody>,
) -> Result<Json<Value>, OllamaError> {
    options::params(body.options.as_ref())?;
    let keep_alive = options::keep_alive(body.keep_alive.as_ref())?;
    let model = model_name(&body.model);
    if body.prompt.is_empty() {
        return Ok(Json(json!({ "embedding": [] })));
    }
    let acquired = state.registry().acquire(&model, keep_alive).await?;
    let embedded = embedding::embed(
        acquired.engine,
        &acquired.id,
        Input::Texts(vec![body.prompt]),
        true,
    )
    .await?;
    let vector = embedded.vectors.into_iter().next().unwrap_or_default();
    Ok(Json(json!({ "embedding": vector })))
}

async fn list(state: &AppState) -> Result<Vec<LocalModel>, ApiError> {
    let catalog = state.registry().catalog().clone();
    tokio::task::spawn_blocking(move || catalog.list())
        .await
        .map_err(ApiError::internal)?
        .map_err(|err| ApiError::from(RegistryError::Catalog(err)))
}

async fn find(state: &AppState, name: &str) -> Result<LocalModel, ApiError> {
    let catalog = state.registry().catalog().clone();
    let wanted = name.to_string();
    Ok(
        tokio::task::spawn_blocking(move || catalog.resolve(&wanted))
            .await
            .map_err(ApiError::internal)?
            .map_err(|err| ApiError::from(RegistryError::Catalog(err)))?
            .ok_or_else(|| RegistryError::NotFound(name.to_string()))?,
    )
}

/// A model as `/api/tags` lists it (`size`: the file's, or the loaded model's for `/api/ps`).
fn listing(model: &LocalModel, size: Option<u64>) -> Value {
    json!({
        "name": model.id,
        "model": model.id,
        "modified_at": modified_at(model),
        "size": size.unwrap_or(model.size_bytes),
        "digest": digest(model),
        "details": details(model),
    })
}

fn details(model: &LocalModel) -> Value {
    let family = model.architecture.clone().unwrap_or_default();
    json!({
        "parent_model": "",
        "format": match model.kind {
            ModelKind::Gguf => "gguf",
            ModelKind::Encoder | ModelKind::Onnx => "onnx",
            ModelKind::TextGeneration | ModelKind::SentenceTransformers => "safetensors",
            _ => "other",
        },
        "family": family,
        "families": if family.is_empty() { vec![] } else { vec![family.clone()] },
        "parameter_size": "",
        "quantization_level": "",
    })
}

/// A stable digest naming this model file (of its id, size and time: hashing gigabytes for a
/// listing would take seconds).
fn digest(model: &LocalModel) -> String {
    let mut hash = Sha256::new();
    hash.update(model.id.as_bytes());
    hash.update(model.size_bytes.to_le_bytes());
    hash.update(model.created.to_le_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn modified_at(model: &LocalModel) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(model.created))
}

/// `135M`, `1.5B`: parameters as Ollama shows them.
fn parameter_size(count: u64) -> String {
    match count {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parameter_size;

    #[test]
    fn parameter_sizes_read_as_ollama_writes_them() {
        assert_eq!(parameter_size(134_515_008), "134M");
        assert_eq!(parameter_size(494_032_768), "494M");
        assert_eq!(parameter_size(1_543_714_304), "1.5B");
    }
}
