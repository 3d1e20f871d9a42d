//! The router's configuration (`[router]` in tabagent.toml): remote providers, aliases and
//! named routes, validated once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::health::BreakerPolicy;

/// How capable (and usually how costly) a model is; routes ask for a tier.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Small and quick.
    Fast,
    /// The usual.
    #[default]
    Standard,
    /// The strongest available.
    Expert,
}

/// What a provider's models can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Tool (function) calls.
    pub tools: bool,
    /// Images in messages.
    pub vision: bool,
    /// JSON output (`response_format`).
    pub json: bool,
    /// Longest context, in tokens, if known.
    pub context_length: Option<u32>,
}

/// Price per million tokens, for reports and cost-aware routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cost {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million generated tokens.
    pub output: f64,
}

/// A remote engine speaking OpenAI's API: llama.cpp's server, vLLM, Ollama, LM Studio, OpenAI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its name in routes, metrics and `provider/model` references.
    pub name: String,
    /// The API's base, ending before `/chat/completions` (e.g. `http://10.0.0.7:8000/v1`).
    pub base_url: String,
    /// The environment variable holding its API key, if it needs one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The models it serves, by the names it knows them by.
    pub models: Vec<String>,
    /// Their tier.
    #[serde(default)]
    pub tier: Tier,
    /// What they can do.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// What they cost.
    #[serde(default)]
    pub cost: Cost,
    /// Preference among equally healthy providers (higher is tried first).
    #[serde(default = "one")]
    pub weight: f64,
    /// Requests it is sent at once, at most; more wait their turn (none: no limit).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}

fn one() -> f64 {
    1.0
}

/// A named task (`expert-reasoning`): what a model must offer to serve it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The lowest tier that will do.
    pub tier: Tier,
    /// Capabilities every candidate must have (`tools`, `vision`, `json`).
    pub capabilities: Vec<String>,
    /// At least this much context.
    pub min_context: Option<u32>,
    /// Sampling settings to choose among for this task: each (provider, model, set) is an arm
    /// of the bandit, so the router learns which settings answer this task best.
    pub parameter_sets: Vec<ParameterSet>,
    /// Context added to the prompt before it is answered (the context-enhancement step).
    pub context: Option<ContextConfig>,
}

/// Where a context-enhancement step looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextSource {
    /// The memory stores (hybrid search on the last user message).
    #[default]
    Memory,
}

/// The context-enhancement step of a route (or of a request asking for it with
/// `X-TabAgent-Context`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Where to look.
    pub source: ContextSource,
    /// The stores searched (all when empty).
    pub stores: Vec<String>,
    /// Records added, at most.
    pub limit: usize,
    /// Characters of context added, at most.
    pub max_chars: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            source: ContextSource::Memory,
            stores: Vec::new(),
            limit: 3,
            max_chars: 2000,
        }
    }
}

/// Named sampling settings; a setting the caller gave itself is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSet {
    /// Its name in analytics.
    pub name: String,
    /// Sampling temperature (0 to 2).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling (above 0, at most 1).
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k sampling (0: off).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Min-p sampling (0 to 1).
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Repetition penalty (above 0).
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Frequency penalty (-2 to 2).
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Presence penalty (-2 to 2).
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Longest answer, in tokens.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

impl ParameterSet {
    /// Sets what this set names in `params`, except what the caller `fixed` itself (named as
    /// on the wire: `temperature`, `max_tokens`, ...).
    pub fn apply(
        &self,
        params: &mut tabagent_core::GenerationParams,
        fixed: &std::collections::BTreeSet<&'static str>,
    ) {
        let s = &mut params.sampling;
        let free = |name: &str| !fixed.contains(name);
        macro_rules! set {
            ($field:ident, $target:expr) => {
                if let Some(value) = self.$field {
                    if free(stringify!($field)) {
                        $target = value;
                    }
                }
            };
        }
        set!(temperature, s.temperature);
        set!(top_p, s.top_p);
        set!(top_k, s.top_k);
        set!(min_p, s.min_p);
        set!(repeat_penalty, s.repeat_penalty);
        set!(frequency_penalty, s.frequency_penalty);
        set!(presence_penalty, s.presence_penalty);
        if let Some(max) = self.max_tokens {
            if free("max_tokens") {
                params.max_tokens = Some(max);
            }
        }
    }

    fn check(&self, route: &str) -> Result<(), ConfigError> {
        let bad = |what: &str| {
            Err(ConfigError(format!(
                "route `{route}`, parameter set `{}`: {what}",
                self.name
            )))
        };
        let within = |v: Option<f32>, lo: f32, hi: f32| v.is_none_or(|v| v >= lo && v <= hi);
        if self.name.is_empty() || self.name.contains(['/', '#', '@']) {
            return bad("the name is empty or has `/`, `#` or `@`");
        }
        if !within(self.temperature, 0.0, 2.0) {
            return bad("temperature must be between 0 and 2");
        }
        if !within(self.top_p, f32::MIN_POSITIVE, 1.0) || !within(self.min_p, 0.0, 1.0) {
            return bad("top_p must be above 0 and at most 1, min_p between 0 and 1");
        }
        if !within(self.repeat_penalty, f32::MIN_POSITIVE, 10.0) {
            return bad("repeat_penalty must be above 0 and at most 10");
        }
        if !within(self.frequency_penalty, -2.0, 2.0) || !within(self.presence_penalty, -2.0, 2.0) {
            return bad("frequency_penalty and presence_penalty must be between -2 and 2");
        }
        if self.max_tokens == Some(0) {
            return bad("max_tokens must be at least 1");
        }
        Ok(())
    }
}

/// `[router]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Remote providers.
    pub providers: Vec<ProviderConfig>,
    /// Names for models: `alias = "model"` or `alias = "provider/model"`.
    pub aliases: BTreeMap<String, String>,
    /// Named routes; `auto` and `fast` exist unless redefined.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Providers tried for one request, at most.
    pub max_tries: u32,
    /// Seconds a try may take to produce its first token.
    pub first_token_timeout_secs: f64,
    /// Seconds a whole request may take, tries included.
    pub deadline_secs: f64,
    /// Consecutive failures that open a provider's breaker.
    pub breaker_failures: u32,
    /// Seconds an open breaker waits before a probe.
    pub breaker_open_secs: f64,
    /// Seconds between active health probes of each remote provider (`GET /models`); 0: none.
    pub probe_interval_secs: f64,
    /// Order admissible providers by Thompson sampling on what each has earned (on), or by
    /// their health score alone (off: always the same order for the same health).
    pub explore: bool,
    /// A first token within this many seconds earns a full reward; later, proportionally less.
    pub ttft_target_secs: f64,
    /// Seeds the sampling, for reproducible runs.
    pub exploration_seed: Option<u64>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            aliases: BTreeMap::new(),
            routes: BTreeMap::new(),
            max_tries: 3,
            first_token_timeout_secs: 60.0,
            deadline_secs: 600.0,
            breaker_failures: 5,
            breaker_open_secs: 30.0,
            probe_interval_secs: 30.0,
            explore: true,
            ttft_target_secs: 1.0,
            exploration_seed: None,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("router: {0}")]
pub struct ConfigError(pub String);

const KNOWN_CAPABILITIES: [&str; 3] = ["tools", "vision", "json"];

impl RouterConfig {
    /// The route `name` names, directly or through an alias.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.routes.get(name)
    }

    /// Refuses duplicate or empty names, bad URLs, unknown capabilities and impossible limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if p.name.is_empty() || p.name.contains('/') {
                return bad(format!("provider name `{}` is empty or has a `/`", p.name));
            }
            if p.name == crate::LOCAL {
                return bad(format!(
                    "`{}` is the in-process engine's name",
                    crate::LOCAL
                ));
            }
            if !names.insert(p.name.as_str()) {
                return bad(format!("two providers are named `{}`", p.name));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return bad(format!(
                    "provider `{}`: base_url `{}` is not http(s)",
                    p.name, p.base_url
                ));
            }
            if p.models.is_empty() {
                return bad(format!("provider `{}` lists no models", p.name));
            }
            if !(p.weight.is_finite() && p.weight > 0.0) {
                return bad(format!("provider `{}`: weight must be above 0", p.name));
            }
            if p.max_concurrency == Some(0) {
                return bad(format!(
                    "provider `{}`: max_concurrency must be at least 1",
                    p.name
                ));
            }
        }
        for (name, route) in &self.routes {
            if let Some(context) = &route.context {
                if !(1..=50).contains(&context.limit) || !(1..=100_000).contains(&context.max_chars)
                {
                    return bad(format!(
                        "route `{name}`: context.limit must be 1 to 50 and context.max_chars 1 to 100000"
                    ));
                }
            }
            let mut sets = std::collections::HashSet::new();
            for set in &route.parameter_sets {
                set.check(name)?;
                if !sets.insert(set.name.as_str()) {
                    return bad(format!(
                        "route `{name}`: two parameter sets are named `{}`",
                        set.name
                    ));
                }
            }
            for c in &route.capabilities {
                if !KNOWN_CAPABILITIES.contains(&c.as_str()) {
                    return bad(format!(
                        "route `{name}`: unknown capability `{c}` (known: tools, vision, json)"
                    ));
                }
            }
        }
        if self.max_tries == 0 {
            return bad("max_tries must be at least 1".to_string());
        }
        for (what, secs) in [
            ("first_token_timeout_secs", self.first_token_timeout_secs),
            ("deadline_secs", self.deadline_secs),
            ("breaker_open_secs", self.breaker_open_secs),
            ("ttft_target_secs", self.ttft_target_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return bad(format!("{what} must be a positive number of seconds"));
            }
        }
        if !(self.probe_interval_secs.is_finite() && self.probe_interval_secs >= 0.0) {
            return bad(
                "probe_interval_secs must be 0 (no probes) or a positive number".to_string(),
            );
        }
        if self.breaker_failures == 0 {
            return bad("breaker_failures must be at least 1".to_string());
        }
        Ok(())
    }

    /// Each remote provider's concurrency limit, where it has one.
    pub fn provider_concurrency(&self) -> std::collections::HashMap<String, u32> {
        self.providers
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.max_concurrency?)))
            .collect()
    }

    pub(crate) fn breaker(&self) -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: self.breaker_failures,
            open_for: Duration::from_secs_f64(self.breaker_open_secs),
        }
    }
}
