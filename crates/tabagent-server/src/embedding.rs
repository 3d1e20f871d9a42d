//! Embedding texts with the model a request names: the one place that chooses between ONNX
//! Runtime in-process and sentence-transformers in the ML worker, and the memory's embedding
//! model for records and searches.

use std::sync::Arc;

use tabagent_memory::{Embedding, NewRecord};
use tabagent_onnx::{Encoded, EncoderModel};
use tabagent_worker::pb;

use crate::catalog::ModelKind;
use crate::error::ServiceError;
use crate::registry::{Engine, WorkerModel};
use crate::state::AppState;

/// Embeds `input` with the model `engine` runs: the one place that chooses between ONNX Runtime
/// in-process and sentence-transformers in the ML worker (the registry chose the engine from
/// the model's files).
pub async fn embed(
    engine: Engine,
    id: &str,
    input: Input,
    truncate: bool,
) -> Result<Embedded, ServiceError> {
    match engine {
        Engine::Worker(model) if model.kind == ModelKind::SentenceTransformers => {
            embed_in_worker(&model, input, truncate).await
        }
        engine => {
            let encoder = engine.encoder(id)?;
            let encoded = tokenize(&encoder, input, truncate).await?;
            let tokens: usize = encoded.iter().map(|e| e.ids.len()).sum();
            let vectors = encoder
                .encode(encoded)
                .await
                .map_err(|e| ServiceError::Unavailable {
                    code: "model_unavailable",
                    message: e.to_string(),
                })?;
            Ok(Embedded {
                vectors,
                tokens,
                normalized: encoder.info().normalized,
            })
        }
    }
}

/// Vectors and what they cost.
pub struct Embedded {
    /// One per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens embedded.
    pub tokens: usize,
    /// Whether the model gives unit vectors (cut ones are then re-normalised).
    pub normalized: bool,
}

/// Texts embedded by a sentence-transformers model in the ML worker (its own tokenizer,
/// pooling and normalisation, as the model's modules say).
async fn embed_in_worker(
    model: &WorkerModel,
    input: Input,
    truncate: bool,
) -> Result<Embedded, ServiceError> {
    let Input::Texts(texts) = input else {
        return Err(ServiceError::invalid(
            Some("input"),
            format!(
                "`{}` runs in the ML worker, which takes texts, not token ids",
                model.id
            ),
        ));
    };
    let reply = model
        .worker
        .embed(pb::EmbedRequest {
            model_id: model.id.clone(),
            texts,
            normalize: false,
            refuse_over_long: !truncate,
        })
        .await?;
    let vectors: Vec<Vec<f32>> = reply.vectors.into_iter().map(|v| v.values).collect();
    // sentence-transformers normalises when the model ends in a Normalize module: unit vectors
    // tell.
    let normalized = vectors.iter().all(|v| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm - 1.0).abs() < 1e-3
    });
    Ok(Embedded {
        vectors,
        tokens: reply.prompt_tokens as usize,
        normalized,
    })
}

/// What a request asked to embed.
pub enum Input {
    /// Texts, tokenized by the model.
    Texts(Vec<String>),
    /// Token ids, used as given.
    Tokens(Vec<Vec<i64>>),
}

/// Tokenizes texts (off the async threads), or checks token ids against the vocabulary; cuts
/// or refuses inputs over the model's limit.
pub async fn tokenize(
    encoder: &Arc<EncoderModel>,
    input: Input,
    truncate: bool,
) -> Result<Vec<Encoded>, ServiceError> {
    let max = encoder.info().max_tokens;
    let encoded = match input {
        Input::Texts(texts) => {
            let encoder = Arc::clone(encoder);
            tokio::task::spawn_blocking(move || {
                texts
                    .iter()
                    .map(|t| encoder.tokenizer().encode(t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(ServiceError::internal)?
            .map_err(|e| ServiceError::invalid(Some("input"), e.to_string()))?
        }
        Input::Tokens(lists) => {
            let vocab = encoder.tokenizer().vocab_size() as i64;
            lists
                .into_iter()
                .enumerate()
                .map(|(i, mut ids)| {
                    if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
                        return Err(ServiceError::invalid(
                            Some("input"),
                            format!("`input[{i}]` holds token id {bad}, outside the vocabulary (0..{vocab})"),
                        ));
                    }
                    let truncated = ids.len() > max;
                    ids.truncate(max);
                    Ok(Encoded {
                        type_ids: vec![0; ids.len()],
                        ids,
                        truncated,
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    if !truncate {
        if let Some(at) = encoded.iter().position(|e| e.truncated) {
            return Err(ServiceError::invalid(
                Some("input"),
                format!("`input[{at}]` is longer than the model's {max} tokens; shorten it or send `\"truncate\": true`"),
            ));
        }
    }
    Ok(encoded)
}

/// Vectors for `texts` from the memory's embedding model (`memory.embedding_model`), and its
/// id (the space); `None` when none is configured.
pub async fn for_memory(
    state: &AppState,
    texts: Vec<String>,
) -> Result<Option<(String, Vec<Vec<f32>>)>, ServiceError> {
    let Some(model) = state.config().memory.embedding_model.clone() else {
        return Ok(None);
    };
    if texts.is_empty() {
        return Ok(Some((model, Vec::new())));
    }
    with_model(state, &model, texts).await.map(Some)
}

/// `text`'s vector from the memory's embedding model, in its space; `None` when none is
/// configured.
pub async fn one_for_memory(
    state: &AppState,
    text: &str,
) -> Result<Option<tabagent_memory::Embedding>, ServiceError> {
    Ok(for_memory(state, vec![text.to_string()])
        .await?
        .and_then(|(space, mut vectors)| {
            vectors
                .pop()
                .map(|vector| tabagent_memory::Embedding { space, vector })
        }))
}

/// Vectors for `texts` from `model`, and its id (the space).
pub async fn with_model(
    state: &AppState,
    model: &str,
    texts: Vec<String>,
) -> Result<(String, Vec<Vec<f32>>), ServiceError> {
    let acquired = state.registry().acquire(model, None).await?;
    let embedded = embed(acquired.engine, &acquired.id, Input::Texts(texts), true).await?;
    Ok((acquired.id, embedded.vectors))
}

/// Embeds the text of `records` that have no vector, in one batch, when
/// `memory.embedding_model` is set.
pub async fn records(
    state: &AppState,
    mut records: Vec<NewRecord>,
) -> Result<Vec<NewRecord>, ServiceError> {
    let wanted: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].embedding.is_none() && !records[i].text.trim().is_empty())
        .collect();
    let texts = wanted.iter().map(|&i| records[i].text.clone()).collect();
    if let Some((space, vectors)) = for_memory(state, texts).await? {
        for (i, vector) in wanted.into_iter().zip(vectors) {
            records[i].embedding = Some(Embedding {
                space: space.clone(),
                vector,
            });
        }
    }
    Ok(records)
}
