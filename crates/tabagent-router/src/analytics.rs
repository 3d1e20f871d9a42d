//! Parameter analytics: Thompson sampling over arms, so that among the providers that could
//! serve a request the router learns which answer well.
//!
//! An arm is a (provider, model) pair, or for a route (a task type) with parameter sets, a
//! (provider, model, task, parameter set): the bandit then learns which sampling settings serve
//! that task best on each model, and `best_for_task` answers "which settings for this task?".
//! Each holds a Beta(α, β) posterior over its reward in
//! [0, 1]: a failed try rewards 0; an answer rewards 1 if its time to first token is within
//! `ttft_target_secs`, less in proportion beyond it; a caller's feedback (`POST /v1/feedback`,
//! a score from 0 to 1) is one more observation of the arm that answered. Ordering candidates
//! by a draw from each posterior sends most requests to the best arm while still trying the
//! others now and then, in proportion to the chance that they are better.
//!
//! Posteriors are saved to a JSON file (written whole, then renamed into place) after each
//! piece of feedback, before it is acknowledged, and every `SAVE_EVERY` outcomes; a crash loses
//! at most that many request outcomes, never acknowledged feedback.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

/// Outcomes between saves.
const SAVE_EVERY: u64 = 100;
/// Answers remembered for feedback.
const REMEMBERED: usize = 10_000;

/// Which arm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ArmId {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The route (task type) whose parameter set was used.
    pub task: Option<String>,
    /// The parameter set.
    pub parameter_set: Option<String>,
}

impl ArmId {
    /// A provider's model, without parameter sets.
    pub fn new(provider: &str, model: &str) -> ArmId {
        ArmId {
            provider: provider.to_string(),
            model: model.to_string(),
            ..ArmId::default()
        }
    }

    fn key(&self) -> String {
        match (&self.task, &self.parameter_set) {
            (Some(task), Some(set)) => format!("{}/{}@{task}#{set}", self.provider, self.model),
            _ => format!("{}/{}", self.provider, self.model),
        }
    }
}

/// One arm's posterior and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The route (task type), for an arm with a parameter set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The parameter set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_set: Option<String>,
    /// Beta's α: 1 plus the rewards seen.
    pub alpha: f64,
    /// Beta's β: 1 plus the shortfalls seen.
    pub beta: f64,
    /// Tries (and feedback) observed.
    pub pulls: u64,
}

impl Arm {
    fn new(id: &ArmId) -> Self {
        Self {
            provider: id.provider.clone(),
            model: id.model.clone(),
            task: id.task.clone(),
            parameter_set: id.parameter_set.clone(),
            alpha: 1.0,
            beta: 1.0,
            pulls: 0,
        }
    }

    /// Which arm it is.
    pub fn id(&self) -> ArmId {
        ArmId {
            provider: self.provider.clone(),
            model: self.model.clone(),
            task: self.task.clone(),
            parameter_set: self.parameter_set.clone(),
        }
    }

    /// The posterior mean reward.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    fn observe(&mut self, reward: f64) {
        let reward = reward.clamp(0.0, 1.0);
        self.alpha += reward;
        self.beta += 1.0 - reward;
        self.pulls += 1;
    }
}

/// Why feedback was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    /// No answer with that id is remembered (too old, from before a restart, or made up).
    #[error("no answer with id `{0}` is remembered for feedback")]
    UnknownAnswer(String),
    /// The score is not between 0 and 1.
    #[error("score must be between 0 and 1")]
    BadScore,
    /// The posteriors could not be saved, so the feedback was not taken.
    #[error("could not save the analytics: {0}")]
    Save(String),
}

struct State {
    arms: BTreeMap<String, Arm>,
    answered: HashMap<String, ArmId>,
    order: VecDeque<String>,
    unsaved: u64,
}

/// The bandit.
pub struct Analytics {
    path: Option<PathBuf>,
    ttft_target_secs: f64,
    state: Mutex<State>,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Analytics {
    /// Posteriors kept in `path` (loaded if it exists), or only in memory; draws seeded by
    /// `seed` (reproducible runs and tests) or by the OS.
    pub fn open(
        path: Option<PathBuf>,
        ttft_target_secs: f64,
        seed: Option<u64>,
    ) -> Result<Self, String> {
        let arms: Vec<Arm> = match &path {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            _ => Vec::new(),
        };
        let arms = arms.into_iter().map(|arm| (arm.id().key(), arm)).collect();
        Ok(Self {
            path,
            ttft_target_secs,
            state: Mutex::new(State {
                arms,
                answered: HashMap::new(),
                order: VecDeque::new(),
                unsaved: 0,
            }),
            rng: Mutex::new(match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_os_rng(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A draw from an arm's posterior (unknown arms are uniform), for ordering candidates.
    pub fn draw(&self, arm: &ArmId) -> f64 {
        let (alpha, beta) = self
            .lock()
            .arms
            .get(&arm.key())
            .map_or((1.0, 1.0), |arm| (arm.alpha, arm.beta));
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Beta::new(alpha, beta).map_or(0.5, |b| b.sample(&mut *rng))
    }

    /// An arm's posterior mean (an unknown arm's is ½).
    pub fn mean(&self, arm: &ArmId) -> f64 {
        self.lock().arms.get(&arm.key()).map_or(0.5, Arm::mean)
    }

    /// The arm with the best posterior mean among those tried for `task`.
    pub fn best_for_task(&self, task: &str) -> Option<Arm> {
        self.lock()
            .arms
            .values()
            .filter(|arm| arm.task.as_deref() == Some(task))
            .max_by(|a, b| a.mean().total_cmp(&b.mean()))
            .cloned()
    }

    /// A try's outcome: `ttft_secs` to its first token, or `None` if it failed.
    pub fn outcome(&self, arm: &ArmId, ttft_secs: Option<f64>) {
        let reward = match ttft_secs {
            None => 0.0,
            Some(ttft) if ttft <= self.ttft_target_secs => 1.0,
            Some(ttft) => self.ttft_target_secs / ttft,
        };
        let save = {
            let mut state = self.lock();
            state
                .arms
                .entry(arm.key())
                .or_insert_with(|| Arm::new(arm))
                .observe(reward);
            state.unsaved += 1;
            state.unsaved >= SAVE_EVERY
        };
        if save {
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "could not save the router's analytics");
            }
        }
    }

    /// Remembers that answer `id` came from this arm, for feedback.
    pub fn answered(&self, id: &str, arm: &ArmId) {
        let mut state = self.lock();
        if state.order.len() >= REMEMBERED {
            if let Some(old) = state.order.pop_front() {
                state.answered.remove(&old);
            }
        }
        state.order.push_back(id.to_string());
        state.answered.insert(id.to_string(), arm.clone());
    }

    /// A caller's score (0 to 1) for answer `id`, saved before this returns.
    pub fn feedback(&self, id: &str, score: f64) -> Result<Arm, FeedbackError> {
        if !(0.0..=1.0).contains(&score) {
            return Err(FeedbackError::BadScore);
        }
        let arm = {
            let mut state = self.lock();
            let id = state
                .answered
                .get(id)
                .cloned()
                .ok_or_else(|| FeedbackError::UnknownAnswer(id.to_string()))?;
            // An answer served without a try (the in-process engine directly) has no arm yet.
            let arm = state.arms.entry(id.key()).or_insert_with(|| Arm::new(&id));
            arm.observe(score);
            arm.clone()
        };
        self.save().map_err(FeedbackError::Save)?;
        Ok(arm)
    }

    /// Every arm, best posterior mean first.
    pub fn arms(&self) -> Vec<Arm> {
        let mut arms: Vec<Arm> = self.lock().arms.values().cloned().collect();
        arms.sort_by(|a, b| b.mean().total_cmp(&a.mean()));
        arms
    }

    /// Writes the posteriors to their file (a temporary file, fsynced, renamed over it).
    pub fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let arms: Vec<Arm> = {
            let mut state = self.lock();
            state.unsaved = 0;
            state.arms.values().cloned().collect()
        };
        write_atomically(
            path,
            &serde_json::to_vec_pretty(&arms).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_feedback_move_the_posterior_and_feedback_is_saved_before_it_returns() {
        let dir = tempfile_dir("feedback");
        let path = dir.join("analytics.json");
        let analytics = Analytics::open(Some(path.clone()), 0.5, Some(1)).unwrap();
        analytics.outcome(&ArmId::new("a", "m"), Some(0.1));
        analytics.outcome(&ArmId::new("a", "m"), Some(2.0));
        analytics.outcome(&ArmId::new("b", "m"), None);
        let arms = analytics.arms();
        assert_eq!((arms[0].provider.as_str(), arms[0].pulls), ("a", 2));
        assert!((arms[0].alpha - 2.25).abs() < 1e-9 && (arms[0].beta - 1.75).abs() < 1e-9);
        assert_eq!((arms[1].alpha, arms[1].beta), (1.0, 2.0));
        assert_eq!(
            analytics.feedback("nope", 1.0),
            Err(FeedbackError::UnknownAnswer("nope".into()))
        );
        analytics.answered("chatcmpl-1", &ArmId::new("b", "m"));
        assert_eq!(
            analytics.feedback("chatcmpl-1", 1.5),
            Err(FeedbackError::BadScore)
        );
        let arm = analytics.feedback("chatcmpl-1", 1.0).unwrap();
        assert_eq!((arm.alpha, arm.beta, arm.pulls), (2.0, 2.0, 2));
        // Saved: a new instance reads the same posteriors.
        let again = Analytics::open(Some(path), 0.5, None).unwrap();
        assert_eq!(again.arms(), analytics.arms());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn draws_favour_the_better_arm_and_still_try_the_other() {
        let analytics = Analytics::open(None, 1.0, Some(7)).unwrap();
        let (good, bad) = (ArmId::new("good", "m"), ArmId::new("bad", "m"));
        for _ in 0..20 {
            analytics.outcome(&good, Some(0.1));
            analytics.outcome(&bad, None);
        }
        let good_wins = (0..1000)
            .filter(|_| analytics.draw(&good) > analytics.draw(&bad))
            .count();
        assert!(good_wins > 990, "{good_wins}");
        let unknown = (0..1000)
            .filter(|_| analytics.draw(&ArmId::new("new", "m")) > 0.5)
            .count();
        assert!(
            (400..600).contains(&unknown),
            "an untried arm is uniform: {unknown}"
        );
    }

    #[test]
    fn parameter_sets_are_arms_of_their_own_and_old_files_still_load() {
        let dir = tempfile_dir("sets");
        let path = dir.join("analytics.json");
        // A file from before parameter sets.
        std::fs::write(
            &path,
            r#"[{"provider":"a","model":"m","alpha":3.0,"beta":1.0,"pulls":2}]"#,
        )
        .unwrap();
        let analytics = Analytics::open(Some(path.clone()), 1.0, Some(3)).unwrap();
        assert_eq!(analytics.mean(&ArmId::new("a", "m")), 0.75);
        let set = |name: &str| ArmId {
            task: Some("code".into()),
            parameter_set: Some(name.into()),
            ..ArmId::new("a", "m")
        };
        for _ in 0..10 {
            analytics.outcome(&set("precise"), Some(0.1));
            analytics.outcome(&set("loose"), None);
        }
        assert_eq!(analytics.mean(&ArmId::new("a", "m")), 0.75, "untouched");
        let best = analytics.best_for_task("code").unwrap();
        assert_eq!(best.parameter_set.as_deref(), Some("precise"));
        assert_eq!(analytics.best_for_task("chat"), None);
        analytics.save().unwrap();
        let again = Analytics::open(Some(path), 1.0, None).unwrap();
        assert_eq!(again.arms(), analytics.arms());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tabagent-analytics-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
