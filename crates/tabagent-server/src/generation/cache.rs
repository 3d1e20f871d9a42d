//! The response caches in front of generation: the exact one (same model, messages and
//! settings; temperature 0 or a seed) and the semantic one (a question close enough to one
//! already answered, when `response_cache.semantic` is on). Only text answers are cached.

use std::sync::Arc;

use tabagent_core::{ChatMessage, GenerationParams};
use tabagent_router::CachedAnswer;

use crate::state::AppState;

/// What the caches said about a request they may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// The exact cache answered.
    Hit,
    /// The semantic cache answered.
    SemanticHit,
    /// Neither did: the answer is generated, then kept.
    Miss,
}

impl CacheStatus {
    /// Its name on the wire (`X-TabAgent-Cache`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::SemanticHit => "semantic-hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// The outcome of a lookup.
pub struct Lookup {
    /// `None` when the request may not be answered from a cache.
    pub status: Option<CacheStatus>,
    /// The answer found.
    pub hit: Option<CachedAnswer>,
    /// Where a fresh answer is kept (on a miss).
    pub keep: Option<Keep>,
}

impl Lookup {
    /// A request the caches do not answer.
    pub fn skipped() -> Lookup {
        Lookup {
            status: None,
            hit: None,
            keep: None,
        }
    }
}

/// Where to keep a fresh answer.
pub struct Keep {
    key: Arc<str>,
    semantic: Option<([u8; 32], Vec<f32>)>,
}

impl Keep {
    /// Keeps `answer` in the exact cache (and the semantic one, when it was asked).
    pub async fn put(self, state: &AppState, answer: CachedAnswer) {
        state.cache().put(&self.key, &answer).await;
        if let Some((scope, vector)) = self.semantic {
            state.cache().semantic().put(scope, vector, answer);
        }
    }
}

/// Looks `model`'s request up in the exact cache, then (on a miss) the semantic one.
pub async fn lookup(
    state: &AppState,
    model: &str,
    messages: &[ChatMessage],
    params: &GenerationParams,
) -> Lookup {
    let Some(key) = state
        .cache()
        .key(model, messages, params)
        .map(Arc::<str>::from)
    else {
        return Lookup::skipped();
    };
    if let Some(hit) = state.cache().get(&key).await {
        state.metrics().cache_lookup("hit");
        return Lookup {
            status: Some(CacheStatus::Hit),
            hit: Some(hit),
            keep: None,
        };
    }
    state.metrics().cache_lookup("miss");
    let mut semantic = None;
    if let Some(query) = state.cache().semantic_query(model, messages, params) {
        if let Some(vector) = question_vector(state, &query.question).await {
            let found = state.cache().semantic().get(&query.scope, &vector);
            state.metrics().cache_lookup(if found.is_some() {
                "semantic_hit"
            } else {
                "semantic_miss"
            });
            if let Some((answer, _)) = found {
                return Lookup {
                    status: Some(CacheStatus::SemanticHit),
                    hit: Some(answer),
                    keep: None,
                };
            }
            semantic = Some((query.scope, vector));
        }
    }
    Lookup {
        status: Some(CacheStatus::Miss),
        hit: None,
        keep: Some(Keep { key, semantic }),
    }
}

/// The question embedded for the semantic cache; `None` (the cache is skipped) when the
/// embedding model fails.
async fn question_vector(state: &AppState, question: &str) -> Option<Vec<f32>> {
    let config = state.config();
    let model = config
        .response_cache
        .semantic_model
        .as_deref()
        .or(config.memory.embedding_model.as_deref())?;
    match crate::embedding::with_model(state, model, vec![question.to_string()]).await {
        Ok((_, mut vectors)) => vectors.pop(),
        Err(err) => {
            tracing::warn!(error = %err, "semantic cache skipped: the question could not be embedded");
            None
        }
    }
}
