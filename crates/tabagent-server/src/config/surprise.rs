//! `[memory.surprise]`: what the memory keeps of conversations and agent runs by itself.

use serde::{Deserialize, Serialize};

/// Surprise-gated memory: a new user turn in a conversation (or an agent run's task and
/// answer) is scored against what the memory already holds, and kept when it is surprising.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SurpriseSettings {
    /// Score and keep surprising turns (of requests that name a conversation) and agent runs.
    pub enabled: bool,
    /// What is kept: a score (0 to 1, the mean of relative surprisal and novelty) at least this.
    pub threshold: f64,
    /// The score halves every this many days (`why.surprise.strength` on search hits).
    pub half_life_days: f64,
    /// The nearest records shown to the model as what it already knows.
    pub notes: usize,
    /// Texts shorter than this (characters) are not scored.
    pub min_chars: usize,
}

impl Default for SurpriseSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.5,
            half_life_days: 30.0,
            notes: 4,
            min_chars: 20,
        }
    }
}

impl SurpriseSettings {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.threshold)
            || self.half_life_days.is_nan()
            || self.half_life_days <= 0.0
            || !(1..=32).contains(&self.notes)
        {
            anyhow::bail!(
                "memory.surprise: threshold must be 0 to 1, half_life_days above 0, notes 1 to 32"
            );
        }
        Ok(())
    }
}
