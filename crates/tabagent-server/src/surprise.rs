//! Surprise-gated memory (seed 003's "keep what is surprising"): a text is scored by how much
//! the memory already predicts it, and kept only when that is little.
//!
//! Two measures, each from 0 (already known) to 1 (new), averaged into the score:
//! - **relative surprisal**: the local language model's mean surprisal of the text (nats per
//!   token) after being shown the nearest records as notes, divided by its surprisal after no
//!   notes. A fact the notes hold is copied, not guessed: its surprisal falls; a new fact's
//!   stays where it was. Dividing by the text's own surprisal makes plain and odd wording alike.
//!   (An update that changes one detail of a known fact, a date or a name, is mostly predicted
//!   too: scored as a repeat, it is not kept; `scripts/bench-surprise` counts them.)
//! - **novelty**: one minus the highest cosine similarity between the text and a stored vector.
//!
//! Kept texts carry their measures in `data.surprise`; search hits show them in
//! `why.surprise`, with a strength that halves every `half_life_days`.

use serde::Serialize;
use serde_json::{json, Value};
use tabagent_memory::{Embedding, Filter, MemoryApi as _, Mode, NewRecord, SearchRequest, Store};
use utoipa::ToSchema;

use crate::config::SurpriseSettings;
use crate::error::ServiceError;
use crate::state::AppState;

/// The most of a note shown to the model.
const NOTE_CHARS: usize = 400;
/// The longest text scored (characters; beyond it, the start).
const MAX_TEXT_CHARS: usize = 2_000;

/// How surprising a text is to the memory.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Measured {
    /// The score, 0 to 1: the mean of `relative_surprisal` and `novelty` (novelty alone when
    /// no local language model could score).
    pub score: f64,
    /// Mean surprisal (nats per token) with the nearest records shown as notes.
    pub surprisal: Option<f64>,
    /// Mean surprisal without them.
    pub baseline: Option<f64>,
    /// `surprisal / baseline`, at most 1.
    pub relative_surprisal: Option<f64>,
    /// One minus the highest cosine similarity to a stored vector (1 when none is close).
    pub novelty: f64,
    /// The records shown as notes.
    pub notes: Vec<i64>,
    /// The model that scored.
    pub model: Option<String>,
}

/// What [`remember`] decided.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Decision {
    /// The measures.
    pub surprise: Measured,
    /// Whether the score reached `memory.surprise.threshold`.
    pub kept: bool,
    /// The record written, when kept.
    pub id: Option<i64>,
}

/// Where a remembered text goes.
pub struct Target {
    /// Its store (and the store it is compared with).
    pub store: Store,
    /// Its record kind.
    pub kind: &'static str,
    /// Its conversation.
    pub conversation: Option<String>,
    /// Where it came from.
    pub source: Option<String>,
}

/// Scores `text` against `target.store`, and keeps it there when surprising enough (`keep`:
/// else only measured).
pub async fn remember(
    state: &AppState,
    text: &str,
    target: Target,
    keep: bool,
) -> Result<Decision, ServiceError> {
    let settings = &state.config().memory.surprise;
    let memory = state.memory().ok_or_else(ServiceError::memory_off)?;
    let text: String = text.trim().chars().take(MAX_TEXT_CHARS).collect();
    let embedding = crate::embedding::one_for_memory(state, &text).await?;
    let surprise = measure(state, settings, &text, embedding.as_ref(), target.store).await?;
    let kept = surprise.score >= settings.threshold;
    let mut id = None;
    if kept && keep {
        let record = NewRecord {
            kind: Some(target.kind.to_string()),
            text: text.clone(),
            data: json!({ "surprise": surprise }),
            tags: vec!["surprise".into()],
            conversation: target.conversation,
            source: target.source,
            embedding,
            ..NewRecord::default()
        };
        id = Some(memory.insert(target.store, record).await?.id);
    }
    tracing::debug!(score = surprise.score, kept, text = %crate::agent::excerpt(&text, 80), "surprise");
    Ok(Decision { surprise, kept, id })
}

/// The measures of `text` against the nearest records of `store`.
async fn measure(
    state: &AppState,
    settings: &SurpriseSettings,
    text: &str,
    embedding: Option<&Embedding>,
    store: Store,
) -> Result<Measured, ServiceError> {
    let memory = state.memory().ok_or_else(ServiceError::memory_off)?;
    let found = memory
        .search(SearchRequest {
            text: Some(text.to_string()),
            vector: embedding.cloned(),
            filter: Filter {
                stores: vec![store],
                ..Filter::default()
            },
            mode: Mode::Hybrid,
            limit: settings.notes,
            offset: 0,
        })
        .await?;
    let closest = found
        .hits
        .iter()
        .filter_map(|hit| hit.why.vector_score)
        .fold(None, |best: Option<f32>, s| {
            Some(best.map_or(s, |b| b.max(s)))
        });
    let novelty = closest.map_or(1.0, |similarity| {
        f64::from(1.0 - similarity).clamp(0.0, 1.0)
    });
    let notes: Vec<&str> = found
        .hits
        .iter()
        .map(|hit| hit.record.text.as_str())
        .collect();
    let model = crate::generation::tasks::model(state, None);
    let surprisals = match notes.is_empty() {
        // Nothing to compare with: as new as it gets.
        true => None,
        false => surprisals(state, &model, &notes, text).await,
    };
    let (surprisal, baseline, relative) = match surprisals {
        Some((with, without)) => (
            Some(mean(&with)),
            Some(mean(&without)),
            Some(relative_surprisal(&with, &without)),
        ),
        None => (None, None, None),
    };
    let score = match (relative, notes.is_empty()) {
        (_, true) => 1.0,
        (Some(relative), false) => (relative + novelty) / 2.0,
        (None, false) => novelty,
    };
    Ok(Measured {
        score,
        surprisal,
        baseline,
        relative_surprisal: relative,
        novelty,
        notes: found.hits.iter().map(|hit| hit.record.id).collect(),
        model: surprisal.map(|_| model),
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// How much of a text's surprisal the notes leave: its mean surprisal with them over its mean
/// surprisal without, at most 1.
fn relative_surprisal(with: &[f64], without: &[f64]) -> f64 {
    let without = mean(without);
    match without > 0.0 {
        true => (mean(with) / without).clamp(0.0, 1.0),
        false => 1.0,
    }
}

/// The surprisal of each token of `text` under `model` with `notes` shown, and without: `None`
/// when the model is not a local language model or cannot score.
async fn surprisals(
    state: &AppState,
    model: &str,
    notes: &[&str],
    text: &str,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let engine = match state.registry().acquire(model, None).await {
        Ok(acquired) => acquired.engine.llama(&acquired.id).ok()?,
        Err(e) => {
            tracing::debug!(model, error = %e, "surprise: no local model to score with");
            return None;
        }
    };
    let listed: String = notes
        .iter()
        .map(|note| format!("- {}\n", crate::agent::excerpt(note, NOTE_CHARS)))
        .collect();
    let with = format!("Notes:\n{listed}\nNew note:");
    let text = format!(" {text}");
    let class = tabagent_llama::JobClass {
        batch: true,
        caller: None,
    };
    let per_token = |context: String| {
        let engine = engine.clone();
        let text = text.clone();
        let class = class.clone();
        async move {
            let mut handle = engine.score(&context, &text, class).ok()?;
            let mut surprisals = Vec::new();
            while let Some(event) = handle.events.recv().await {
                match event {
                    tabagent_core::GenerationEvent::Logprobs(scored) => {
                        surprisals.extend(scored.iter().map(|t| -f64::from(t.logprob)));
                    }
                    tabagent_core::GenerationEvent::Finished { .. } => break,
                    tabagent_core::GenerationEvent::Failed(e) => {
                        tracing::debug!(error = %e, "surprise: scoring failed");
                        return None;
                    }
                    _ => {}
                }
            }
            (!surprisals.is_empty()).then_some(surprisals)
        }
    };
    let with = per_token(with).await?;
    let without = per_token("New note:".to_string()).await?;
    Some((with, without))
}

/// A hit's surprise as `why` tells it: its score and what is left of it after `half_life_days`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhySurprise {
    /// The score when it was kept.
    pub score: f64,
    /// The score halved for every `memory.surprise.half_life_days` since.
    pub strength: f64,
    /// Days since it was kept.
    pub age_days: f64,
}

/// The surprise of a kept record (`data.surprise`), decayed to `now_ms`.
pub fn why(
    data: &Value,
    created_at_ms: i64,
    now_ms: i64,
    half_life_days: f64,
) -> Option<WhySurprise> {
    let score = data.get("surprise")?.get("score")?.as_f64()?;
    let age_days = ((now_ms - created_at_ms).max(0) as f64) / 86_400_000.0;
    Some(WhySurprise {
        score,
        strength: score * 0.5f64.powf(age_days / half_life_days),
        age_days,
    })
}

/// Remembers what is surprising in a conversation's new user turn, in the background (the
/// answer does not wait for it).
pub fn remember_turn(state: &AppState, conversation: &str, user_texts: Vec<String>) {
    let conversation = conversation.to_string();
    remember_later(state, user_texts, move || Target {
        store: Store::Knowledge,
        kind: "remembered",
        conversation: Some(conversation.clone()),
        source: Some(format!("conversation:{conversation}")),
    });
}

/// Remembers an agent run's task and answer as a `lesson` in `experience` when they are
/// surprising (the run itself is always logged), in the background.
pub fn remember_run(state: &AppState, response_id: &str, model: &str, task: &str, answer: &str) {
    let (id, model) = (response_id.to_string(), model.to_string());
    let text = format!("Task: {task}\nAnswer: {answer}");
    remember_later(state, vec![text], move || Target {
        store: Store::Experience,
        kind: "lesson",
        conversation: Some(id.clone()),
        source: Some(format!("model:{model}")),
    });
}

fn remember_later(
    state: &AppState,
    texts: Vec<String>,
    target: impl Fn() -> Target + Send + 'static,
) {
    let settings = &state.config().memory.surprise;
    if !settings.enabled || state.memory().is_none() {
        return;
    }
    let (texts, skipped): (Vec<String>, Vec<String>) = texts
        .into_iter()
        .partition(|text| worth_scoring(text, settings.min_chars));
    for _ in skipped {
        state.metrics().surprise("skipped");
    }
    if texts.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        for text in texts {
            let decision = match remember(&state, &text, target(), true).await {
                Ok(decision) if decision.kept => "kept",
                Ok(_) => "dropped",
                Err(e) => {
                    tracing::warn!(error = %e, "surprise: a text could not be scored");
                    "failed"
                }
            };
            state.metrics().surprise(decision);
        }
    });
}

/// Whether a turn may hold something to keep: long enough, and not a question (asking tells
/// the memory nothing).
fn worth_scoring(text: &str, min_chars: usize) -> bool {
    let text = text.trim();
    text.chars().count() >= min_chars && !text.ends_with('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_loses_half_its_strength_every_half_life() {
        let data = json!({"surprise": {"score": 0.8}});
        let day = 86_400_000;
        let fresh = why(&data, 0, 0, 30.0).unwrap();
        assert_eq!(
            (fresh.score, fresh.strength, fresh.age_days),
            (0.8, 0.8, 0.0)
        );
        let later = why(&data, 0, 60 * day, 30.0).unwrap();
        assert!((later.strength - 0.2).abs() < 1e-9 && (later.age_days - 60.0).abs() < 1e-9);
        assert!(why(&json!({"other": 1}), 0, 0, 30.0).is_none());
    }

    #[test]
    fn questions_and_short_turns_are_not_scored() {
        assert!(worth_scoring("My blood type is O negative.", 20));
        assert!(!worth_scoring("What are good stretches after a run?", 20));
        assert!(!worth_scoring("Thanks, great!", 20));
    }
}
