//! The semantic cache (`response_cache.semantic`, off by default): a request whose question
//! (its last user message) means nearly the same as a cached one's, asked of the same model
//! with the same settings after the same earlier messages, gets that answer. Questions are
//! compared by the cosine similarity of their embeddings (the server embeds them); entries
//! live in process memory, at most `max_entries`, each for the cache's TTL, oldest dropped
//! first. A scan compares the question with every live entry of its scope: at the default
//! 10,000 entries of 384 dimensions that is a few million multiply-adds, well under the cost
//! of the embedding itself.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::CachedAnswer;

/// What a semantic lookup is for.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticQuery {
    /// A digest of the model, settings and earlier messages: only answers given in the same
    /// scope are candidates.
    pub scope: [u8; 32],
    /// The question, to embed.
    pub question: String,
}

struct Entry {
    scope: [u8; 32],
    vector: Vec<f32>,
    expires: Instant,
    answer: CachedAnswer,
}

/// Answers by question similarity.
pub struct SemanticCache {
    entries: Mutex<VecDeque<Entry>>,
    capacity: usize,
    threshold: f32,
    ttl: Duration,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("capacity", &self.capacity)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl SemanticCache {
    /// At most `capacity` answers, reused from `threshold` similarity, each for `ttl`.
    pub fn new(capacity: usize, threshold: f32, ttl: Duration) -> SemanticCache {
        SemanticCache {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            threshold,
            ttl,
        }
    }

    /// The answer whose question is most similar to `vector` in `scope`, if similar enough,
    /// with the similarity.
    pub fn get(&self, scope: &[u8; 32], vector: &[f32]) -> Option<(CachedAnswer, f32)> {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        entries.retain(|e| e.expires > now);
        let norm = norm(vector);
        entries
            .iter()
            .filter(|e| &e.scope == scope && e.vector.len() == vector.len())
            .map(|e| (e, cosine(&e.vector, vector, norm)))
            .filter(|(_, similarity)| *similarity >= self.threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, similarity)| (e.answer.clone(), similarity))
    }

    /// Keeps `answer` to the question embedded as `vector` in `scope`.
    pub fn put(&self, scope: [u8; 32], vector: Vec<f32>, answer: CachedAnswer) {
        if vector.is_empty() || norm(&vector) == 0.0 {
            return;
        }
        let mut entries = lock(&self.entries);
        while entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(Entry {
            scope,
            vector,
            expires: Instant::now() + self.ttl,
            answer,
        });
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn cosine(a: &[f32], b: &[f32], b_norm: f32) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let denominator = norm(a) * b_norm;
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabagent_core::{FinishReason, Usage};

    fn answer(text: &str) -> CachedAnswer {
        CachedAnswer::new(text.to_string(), FinishReason::Stop, Usage::default())
    }

    #[test]
    fn a_similar_question_in_the_same_scope_gets_the_answer_and_nothing_else_does() {
        let cache = SemanticCache::new(2, 0.9, Duration::from_secs(60));
        let scope = [1u8; 32];
        cache.put(scope, vec![1.0, 0.0, 0.0], answer("one"));
        cache.put(scope, vec![0.0, 1.0, 0.0], answer("two"));
        let (hit, similarity) = cache.get(&scope, &[0.95, 0.1, 0.0]).unwrap();
        assert_eq!(hit.text, "one");
        assert!(similarity > 0.99);
        assert!(
            cache.get(&scope, &[0.6, 0.6, 0.5]).is_none(),
            "not similar enough"
        );
        assert!(
            cache.get(&[2u8; 32], &[1.0, 0.0, 0.0]).is_none(),
            "another scope"
        );
        assert!(
            cache.get(&scope, &[1.0, 0.0]).is_none(),
            "another model's width"
        );
        // Full: the oldest goes.
        cache.put(scope, vec![0.0, 0.0, 1.0], answer("three"));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&scope, &[1.0, 0.0, 0.0]).is_none());
        assert_eq!(cache.get(&scope, &[0.0, 0.0, 2.0]).unwrap().0.text, "three");
        // Expired entries are never answered.
        let expired = SemanticCache::new(4, 0.9, Duration::ZERO);
        expired.put(scope, vec![1.0], answer("old"));
        assert!(expired.get(&scope, &[1.0]).is_none());
    }
}
