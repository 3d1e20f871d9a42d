//! `POST /v1/rerank`: documents ordered by relevance to a query, in the shape Cohere, Jina and
//! text-embeddings-inference share (`results[].index`, `relevance_score`).
//!
//! Scores are the cosine similarity of the query's and each document's embedding from the named
//! embedding model (a bi-encoder), in [-1, 1]. A cross-encoder, which reads query and document
//! together and ranks better, is not served yet: none is published where this project can fetch
//! models (PyPI), so none could be tested.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::embedding::{tokenize, Input};
use crate::state::AppState;

/// `POST /v1/rerank` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// An embedding model.
    pub model: String,
    /// What the documents are ranked against.
    pub query: String,
    /// The documents.
    pub documents: Vec<String>,
    /// Return only the best `top_n` (default: all).
    pub top_n: Option<usize>,
    /// Include each document's text in its result (default false).
    pub return_documents: Option<bool>,
    /// Cut texts over the model's limit (default true); false answers 400 instead.
    pub truncate: Option<bool>,
}

/// A document's text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankDocument {
    /// The text.
    pub text: String,
}

/// One ranked document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankResult {
    /// Its position in `documents`.
    pub index: usize,
    /// Cosine similarity with the query, higher first.
    pub relevance_score: f32,
    /// With `return_documents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<RerankDocument>,
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankUsage {
    /// Tokens embedded, query and documents.
    pub total_tokens: usize,
}

/// `POST /v1/rerank` response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankResponse {
    /// The model.
    pub model: String,
    /// Most relevant first.
    pub results: Vec<RerankResult>,
    /// Token counts.
    pub usage: RerankUsage,
}

/// Documents ranked by embedding similarity to a query.
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "openai",
    request_body = RerankRequest,
    responses(
        (status = 200, body = RerankResponse),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn rerank(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, ApiError> {
    let limit = state.config().onnx.max_inputs_per_request;
    if request.query.is_empty() {
        return Err(ApiError::bad_request(Some("query"), "`query` is empty"));
    }
    if request.documents.is_empty() {
        return Err(ApiError::bad_request(
            Some("documents"),
            "`documents` is empty; send at least one",
        ));
    }
    if request.documents.len() >= limit {
        return Err(ApiError::bad_request(
            Some("documents"),
            format!(
                "{} documents; at most {} per request",
                request.documents.len(),
                limit - 1
            ),
        ));
    }
    if let Some(at) = request.documents.iter().position(String::is_empty) {
        return Err(ApiError::bad_request(
            Some("documents"),
            format!("`documents[{at}]` is empty"),
        ));
    }
    let acquired = state.registry().acquire(&request.model, None).await?;
    let encoder = acquired.engine.encoder(&acquired.id)?;
    let mut texts = Vec::with_capacity(request.documents.len() + 1);
    texts.push(request.query.clone());
    texts.extend(request.documents.iter().cloned());
    let encoded = tokenize(
        &encoder,
        Input::Texts(texts),
        request.truncate.unwrap_or(true),
    )
    .await?;
    let total_tokens = encoded.iter().map(|e| e.ids.len()).sum();
    let vectors = encoder
        .encode(encoded)
        .await
        .map_err(|e| ApiError::unavailable("model_unavailable", e.to_string()))?;
    let Some((query, documents)) = vectors.split_first() else {
        return Err(ApiError::internal("the encoder returned no vectors"));
    };
    let mut results: Vec<RerankResult> = documents
        .iter()
        .enumerate()
        .map(|(index, doc)| RerankResult {
            index,
            relevance_score: cosine(query, doc),
            document: request
                .return_documents
                .unwrap_or(false)
                .then(|| RerankDocument {
                    text: request.documents[index].clone(),
                }),
        })
        .collect();
    results.sort_by(|a, b| {
        b.relevance_score
            .total_cmp(&a.relevance_score)
            .then(a.index.cmp(&b.index))
    });
    results.truncate(request.top_n.unwrap_or(usize::MAX));
    Ok(Json(RerankResponse {
        model: acquired.id,
        results,
        usage: RerankUsage { total_tokens },
    }))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    dot / (norm(a) * norm(b))
}
