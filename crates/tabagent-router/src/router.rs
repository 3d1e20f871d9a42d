//! Choosing providers for a request and trying them in turn.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tabagent_core::{GenerationEvent, InferenceError};

use crate::analytics::{Analytics, ArmId};
use crate::config::{Capabilities, ConfigError, ParameterSet, RouteConfig, RouterConfig, Tier};
use crate::health::{BreakerState, Health, Unavailable};
use crate::openai::OpenAiProvider;
use crate::provider::{ChatRequest, EventStream, Provider, TryError};
use crate::scheduler::{Permits, Refused, Scheduler, SchedulerConfig, Ticket, ANONYMOUS};
use crate::LOCAL;

/// A provider the router may use, with what the configuration says of it.
struct Entry {
    provider: Arc<dyn Provider>,
    /// Its models, or `None` when the provider is asked (`Provider::serves`).
    models: Option<Vec<String>>,
    tier: Tier,
    capabilities: Capabilities,
    weight: f64,
}

/// A provider and the model to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The provider's name.
    pub provider: String,
    /// The model, as that provider names it.
    pub model: String,
}

/// A request that found its provider: the events come from there.
pub struct Routed {
    /// Who answers.
    pub target: Target,
    /// The analytics arm it counts for (feedback on the answer goes there).
    pub arm: ArmId,
    /// The answer, ending in one `Finished` or `Failed`; dropping it cancels the generation.
    pub events: EventStream,
}

/// Why a request could not be routed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// Nothing serves the model or route the request names.
    #[error("no provider serves `{0}`")]
    UnknownModel(String),
    /// The request itself is at fault.
    #[error("{0}")]
    Caller(InferenceError),
    /// Every provider that could serve it failed or is unavailable.
    #[error("no provider could answer: {}", .tried.join("; "))]
    Exhausted {
        /// What happened at each.
        tried: Vec<String>,
        /// When the soonest rate-limited provider will take requests again.
        retry_after: Option<Duration>,
    },
    /// The request's deadline passed before any provider answered.
    #[error("the request's deadline passed before an answer began ({tried} providers tried)")]
    Deadline {
        /// Providers tried by then.
        tried: usize,
    },
    /// The scheduler turned it away (queue full) or it waited past its deadline.
    #[error("{0}")]
    Refused(Refused),
}

/// The providers that could serve a request, best first, decided once per request.
#[derive(Debug, Clone)]
pub struct Plan {
    requested: String,
    candidates: Vec<Choice>,
}

/// One candidate: a provider, the model to ask for, and for a route with parameter sets the
/// set chosen for it (by a draw from each set's posterior on that model).
#[derive(Debug, Clone)]
struct Choice {
    i: usize,
    target: Target,
    set: Option<ParameterSet>,
    arm: ArmId,
}

impl Plan {
    /// Whether nothing could serve it.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Keeps only providers that can take a request with `needs`: remote ones with the
    /// capabilities it needs, and the in-process engine for tools (not images: it has no
    /// multimodal model yet).
    pub fn restrict(mut self, router: &Router, needs: crate::provider::Needs) -> Plan {
        self.candidates.retain(|choice| {
            let entry = &router.entries[choice.i];
            match entry.models {
                // The in-process engine.
                None => !needs.vision,
                Some(_) => {
                    (!needs.tools || entry.capabilities.tools)
                        && (!needs.vision || entry.capabilities.vision)
                }
            }
        });
        self
    }

    /// Who would be tried, in order.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.candidates.iter().map(|c| &c.target)
    }

    /// The parameter set each candidate would use, in order (`None` without sets).
    pub fn parameter_sets(&self) -> impl Iterator<Item = Option<&str>> {
        self.candidates
            .iter()
            .map(|c| c.set.as_ref().map(|s| s.name.as_str()))
    }
}

/// A provider's health as reported (metrics, `/v1/router`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderStatus {
    /// Its name.
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Moving average of the time to the first token, in seconds.
    pub ttft_seconds: Option<f64>,
    /// Moving average of the time to the whole answer, in seconds.
    pub latency_seconds: Option<f64>,
    /// Moving average of failures per try (0 to 1).
    pub error_rate: Option<f64>,
}

/// Routes chat requests across providers.
pub struct Router {
    config: RouterConfig,
    entries: Vec<Entry>,
    health: Arc<Mutex<Vec<Health>>>,
    analytics: Arc<Analytics>,
    scheduler: Arc<Scheduler>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("providers", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `local` (the in-process engine, if any) and the configured remote
    /// providers, whose API keys are read from their environment variables now.
    pub fn new(
        config: RouterConfig,
        local: Option<Arc<dyn Provider>>,
        client: reqwest::Client,
    ) -> Result<Router, ConfigError> {
        config.check()?;
        let mut entries = Vec::new();
        if let Some(local) = local {
            entries.push(Entry {
                provider: local,
                models: None,
                tier: Tier::Fast,
                capabilities: Capabilities {
                    json: true,
                    ..Capabilities::default()
                },
                weight: 1.0,
            });
        }
        for p in &config.providers {
            let api_key = match &p.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    ConfigError(format!(
                        "provider `{}`: the environment variable {var} (its API key) is not set",
                        p.name
                    ))
                })?),
                None => None,
            };
            entries.push(Entry {
                provider: Arc::new(OpenAiProvider::new(
                    &p.name,
                    &p.base_url,
                    api_key,
                    client.clone(),
                )),
                models: Some(p.models.clone()),
                tier: p.tier,
                capabilities: p.capabilities.clone(),
                weight: p.weight,
            });
        }
        let health = (0..entries.len())
            .map(|_| Health::new(config.breaker()))
            .collect();
        let analytics = Analytics::open(None, config.ttft_target_secs, config.exploration_seed)
            .map_err(ConfigError)?;
        let scheduler = Arc::new(Scheduler::new(
            SchedulerConfig::default(),
            config.provider_concurrency(),
        ));
        Ok(Router {
            config,
            entries,
            health: Arc::new(Mutex::new(health)),
            analytics: Arc::new(analytics),
            scheduler,
        })
    }

    /// Limits concurrency through `scheduler` (shared with the caller, which admits requests).
    pub fn with_scheduler(mut self, scheduler: Arc<Scheduler>) -> Router {
        self.scheduler = scheduler;
        self
    }

    /// The scheduler whose gates every try passes.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Keeps the analytics' posteriors in `path` (loading what is there).
    pub fn with_analytics_file(mut self, path: std::path::PathBuf) -> Result<Router, ConfigError> {
        let analytics = Analytics::open(
            Some(path),
            self.config.ttft_target_secs,
            self.config.exploration_seed,
        )
        .map_err(|e| ConfigError(format!("router analytics: {e}")))?;
        self.analytics = Arc::new(analytics);
        Ok(self)
    }

    /// What the router has learnt about each (provider, model).
    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }

    /// Every provider's health.
    pub fn status(&self) -> Vec<ProviderStatus> {
        let health = self.lock();
        self.entries
            .iter()
            .zip(health.iter())
            .map(|(e, h)| ProviderStatus {
                name: e.provider.name().to_string(),
                breaker: h.state().name(),
                ttft_seconds: h.ttft.get(),
                latency_seconds: h.latency.get(),
                error_rate: h.errors.get(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        // Health is plain data: a panic while it was held leaves it usable.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any provider serves `requested` (a model, a route or an alias).
    pub fn knows(&self, requested: &str) -> bool {
        !self.matching(requested).0.is_empty()
    }

    /// The providers that could serve `requested`, best first.
    pub fn candidates(&self, requested: &str) -> Vec<Target> {
        self.plan(requested).targets().cloned().collect()
    }

    /// Decides who could serve `requested`, best first: those whose breaker would let a
    /// request through, then by a draw from each one's posterior (or by health score without
    /// exploration).
    pub fn plan(&self, requested: &str) -> Plan {
        let (found, task) = self.matching(requested);
        Plan {
            requested: requested.to_string(),
            candidates: self.order(found, task),
        }
    }

    /// The providers serving `requested`, in configuration order, and the route's name when it
    /// is a route with parameter sets.
    fn matching(&self, requested: &str) -> (Vec<(usize, Target)>, Option<&str>) {
        let name = self
            .config
            .aliases
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested);
        let mut found: Vec<(usize, Target)> = Vec::new();
        let target = |i: usize, model: &str| Target {
            provider: self.entries[i].provider.name().to_string(),
            model: model.to_string(),
        };
        if let Some((provider, model)) = name.split_once('/') {
            if let Some(i) = self
                .entries
                .iter()
                .position(|e| e.provider.name() == provider && provider != LOCAL)
            {
                found.push((i, target(i, model)));
                return (found, None);
            }
        }
        let mut task = None;
        if let Some(route) = self.route(name) {
            if !route.parameter_sets.is_empty() {
                task = self
                    .config
                    .routes
                    .get_key_value(name)
                    .map(|(k, _)| k.as_str());
            }
            // `fast` (unless configured otherwise) is the fast tier only; other routes take
            // their tier and above.
            let only_fast = name == "fast" && !self.config.routes.contains_key(name);
            for (i, e) in self.entries.iter().enumerate() {
                if e.tier < route.tier
                    || (only_fast && e.tier != Tier::Fast)
                    || !has(&e.capabilities, &route)
                {
                    continue;
                }
                let model = match &e.models {
                    Some(models) => models.first().cloned(),
                    None => e.provider.default_model(),
                };
                if let Some(model) = model {
                    found.push((i, target(i, &model)));
                }
            }
        } else {
            for (i, e) in self.entries.iter().enumerate() {
                let serves = match &e.models {
                    Some(models) => models.iter().any(|m| m == name),
                    None => e.provider.serves(name),
                };
                if serves {
                    found.push((i, target(i, name)));
                }
            }
        }
        (found, task)
    }

    fn order(&self, found: Vec<(usize, Target)>, task: Option<&str>) -> Vec<Choice> {
        let sets: &[ParameterSet] = task
            .and_then(|t| self.config.routes.get(t))
            .map_or(&[], |r| r.parameter_sets.as_slice());
        let explore = self.config.explore;
        // Thompson sampling: a draw from each arm's posterior (without exploration, its mean);
        // with parameter sets, each candidate takes its best set.
        let value = |arm: &ArmId| {
            if explore {
                self.analytics.draw(arm)
            } else {
                self.analytics.mean(arm)
            }
        };
        let choices: Vec<(Choice, f64)> = found
            .into_iter()
            .map(|(i, target)| {
                let plain = ArmId::new(&target.provider, &target.model);
                let mut best: Option<(ArmId, &ParameterSet, f64)> = None;
                for set in sets {
                    let arm = ArmId {
                        task: task.map(str::to_string),
                        parameter_set: Some(set.name.clone()),
                        ..plain.clone()
                    };
                    let v = value(&arm);
                    if best.as_ref().is_none_or(|(_, _, b)| v > *b) {
                        best = Some((arm, set, v));
                    }
                }
                let (arm, set, drawn) = match best {
                    Some((arm, set, v)) => (arm, Some(set.clone()), v),
                    None if explore => {
                        let v = value(&plain);
                        (plain, None, v)
                    }
                    None => (plain, None, 0.0),
                };
                let choice = Choice {
                    i,
                    target,
                    set,
                    arm,
                };
                (choice, drawn)
            })
            .collect();
        let now = Instant::now();
        let health = self.lock();
        // Ordered by weight × draw, or without exploration by the health score.
        let keys: Vec<(bool, f64)> = choices
            .iter()
            .map(|(c, drawn)| {
                let weight = self.entries[c.i].weight;
                let value = if explore {
                    weight * drawn
                } else {
                    health[c.i].score(weight, now)
                };
                (!health[c.i].would_admit(now), value)
            })
            .collect();
        drop(health);
        let mut order: Vec<usize> = (0..choices.len()).collect();
        order.sort_by(|&a, &b| {
            keys[a]
                .0
                .cmp(&keys[b].0)
                .then(keys[b].1.total_cmp(&keys[a].1))
        });
        let mut choices: Vec<Option<Choice>> = choices.into_iter().map(|(c, _)| Some(c)).collect();
        order
            .into_iter()
            .filter_map(|k| choices[k].take())
            .collect()
    }

    /// The route `name` names: a configured one, or the built-in `auto` (any) and `fast`.
    fn route(&self, name: &str) -> Option<RouteConfig> {
        if let Some(route) = self.config.routes.get(name) {
            return Some(route.clone());
        }
        matches!(name, "auto" | "fast").then(|| RouteConfig {
            tier: Tier::Fast,
            ..RouteConfig::default()
        })
    }

    /// Sends `request` to the best provider for `requested`, as an anonymous interactive
    /// request (see [`Router::dispatch`]).
    pub async fn chat(&self, requested: &str, request: ChatRequest) -> Result<Routed, RouteError> {
        self.dispatch(self.plan(requested), request, &Ticket::new(ANONYMOUS))
            .await
    }

    /// Sends `request` to the providers `plan` names, failing over to the next while no token
    /// has been produced, within the per-try timeout and the overall deadline (the ticket's, if
    /// sooner). Each try first passes its provider's and model's gates: a provider with room
    /// now is preferred to a better one that is full; when all are full the request waits its
    /// turn at the best one's.
    pub async fn dispatch(
        &self,
        plan: Plan,
        request: ChatRequest,
        ticket: &Ticket,
    ) -> Result<Routed, RouteError> {
        if plan.candidates.is_empty() {
            return Err(RouteError::UnknownModel(plan.requested));
        }
        let started = Instant::now();
        let mut deadline = started + Duration::from_secs_f64(self.config.deadline_secs);
        if let Some(asked) = ticket.deadline {
            deadline = deadline.min(asked);
        }
        let ticket = Ticket {
            deadline: Some(deadline),
            ..ticket.clone()
        };
        let mut request = request;
        request.ticket = Some(ticket.clone());
        let per_try = Duration::from_secs_f64(self.config.first_token_timeout_secs);
        let mut tried = Vec::new();
        let mut retry_after: Option<Duration> = None;
        let mut tries = 0;
        let mut remaining = plan.candidates;
        while !remaining.is_empty() {
            if tries >= self.config.max_tries {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RouteError::Deadline {
                    tried: tries as usize,
                });
            }
            let (k, permits) = self.next_try(&remaining, &ticket, now).await?;
            // Time spent waiting at the gates counts against the deadline.
            let now = Instant::now();
            if now >= deadline {
                return Err(RouteError::Deadline {
                    tried: tries as usize,
                });
            }
            let Choice {
                i,
                target,
                set,
                arm,
            } = remaining.remove(k);
            match self.lock()[i].admit(now) {
                Ok(()) => {}
                Err(Unavailable::Breaker) => {
                    tried.push(format!("{}: circuit open", target.provider));
                    continue;
                }
                Err(Unavailable::CoolingDown(until)) => {
                    let wait = until - now;
                    retry_after = Some(retry_after.map_or(wait, |r| r.min(wait)));
                    tried.push(format!("{}: rate limited", target.provider));
                    continue;
                }
            }
            tries += 1;
            let provider = Arc::clone(&self.entries[i].provider);
            let limit = per_try.min(deadline - now);
            let try_started = Instant::now();
            let mut pending = PendingTry {
                health: &self.health,
                i,
                armed: true,
            };
            // A parameter set changes this try's copy of the request only.
            let tuned = set.as_ref().map(|set| {
                let mut tuned = request.clone();
                set.apply(&mut tuned.params, &request.fixed);
                tuned
            });
            let attempt = async {
                let request = tuned.as_ref().unwrap_or(&request);
                let mut events = provider.start(&target.model, request).await?;
                let first = events.next().await;
                Ok::<_, TryError>((events, first))
            };
            let outcome = tokio::time::timeout(limit, attempt).await;
            // Every outcome below is recorded; only a caller leaving mid-try is not.
            pending.armed = false;
            let failed = |message: String, tried: &mut Vec<String>| {
                self.lock()[i].failed(Instant::now());
                self.analytics.outcome(&arm, None);
                tracing::warn!(provider = %target.provider, model = %target.model, %message, "try failed; failing over");
                tried.push(message);
            };
            match outcome {
                // The request's own deadline, shorter than a try may take, ended it: that says
                // nothing of the provider.
                Err(_) if limit < per_try || Instant::now() >= deadline => {
                    self.lock()[i].abandoned(Instant::now());
                    return Err(RouteError::Deadline {
                        tried: tries as usize,
                    });
                }
                Err(_) => failed(
                    format!(
                        "{}: no first token within {:.1} s",
                        target.provider,
                        limit.as_secs_f64()
                    ),
                    &mut tried,
                ),
                Ok(Err(TryError::Caller(e))) => {
                    self.lock()[i].abandoned(Instant::now());
                    return Err(RouteError::Caller(e));
                }
                Ok(Err(TryError::Provider {
                    message,
                    retry_after: Some(wait),
                })) => {
                    self.lock()[i].rate_limited(Instant::now(), wait);
                    retry_after = Some(retry_after.map_or(wait, |r| r.min(wait)));
                    tried.push(message);
                }
                Ok(Err(TryError::Provider { message, .. })) => failed(message, &mut tried),
                Ok(Ok((_, None))) => failed(
                    format!("{}: ended without an answer", target.provider),
                    &mut tried,
                ),
                Ok(Ok((_, Some(GenerationEvent::Failed(e))))) => match e {
                    InferenceError::InvalidRequest { .. }
                    | InferenceError::Unsupported { .. }
                    | InferenceError::ContextOverflow { .. } => {
                        self.lock()[i].abandoned(Instant::now());
                        return Err(RouteError::Caller(e));
                    }
                    InferenceError::QueueFull { .. } => {
                        self.lock()[i].rate_limited(Instant::now(), Duration::from_secs(1));
                        tried.push(format!("{}: {e}", target.provider));
                    }
                    other => failed(format!("{}: {other}", target.provider), &mut tried),
                },
                Ok(Ok((events, Some(first)))) => {
                    let ttft = try_started.elapsed();
                    self.analytics.outcome(&arm, Some(ttft.as_secs_f64()));
                    let events = Box::pin(Committed {
                        first: Some(first),
                        events,
                        health: Arc::clone(&self.health),
                        i,
                        started: try_started,
                        ttft,
                        deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
                        done: false,
                        _permits: permits,
                    });
                    return Ok(Routed {
                        target,
                        arm,
                        events,
                    });
                }
            }
        }
        Err(RouteError::Exhausted { tried, retry_after })
    }

    /// Which of `remaining` to try next, and its permits: the first (in order) that its health
    /// would admit and whose gates have room now; else the request waits at the first
    /// admissible one's gates. With none admissible, the first, so its refusal is recorded.
    async fn next_try(
        &self,
        remaining: &[Choice],
        ticket: &Ticket,
        now: Instant,
    ) -> Result<(usize, Permits), RouteError> {
        let admissible: Vec<usize> = {
            let health = self.lock();
            (0..remaining.len())
                .filter(|&k| health[remaining[k].i].would_admit(now))
                .collect()
        };
        for &k in &admissible {
            let target = &remaining[k].target;
            if let Some(permits) = self.scheduler.try_enter(&target.provider, &target.model) {
                return Ok((k, permits));
            }
        }
        let Some(&k) = admissible.first() else {
            return Ok((0, Permits::default()));
        };
        let target = &remaining[k].target;
        let permits = self
            .scheduler
            .enter(ticket, &target.provider, &target.model)
            .await
            .map_err(RouteError::Refused)?;
        Ok((k, permits))
    }

    /// Probes every remote provider at once (`Provider::probe`) and records the results; a
    /// provider asking to be left alone (Retry-After) is skipped.
    pub async fn probe(&self) {
        let now = Instant::now();
        let due: Vec<usize> = {
            let health = self.lock();
            (0..self.entries.len())
                .filter(|&i| self.entries[i].models.is_some() && health[i].may_probe(now))
                .collect()
        };
        let probes = due.iter().map(|&i| self.entries[i].provider.probe());
        let results = futures_util::future::join_all(probes).await;
        let now = Instant::now();
        let mut health = self.lock();
        for (&i, result) in due.iter().zip(results) {
            if let Err(message) = &result {
                tracing::warn!(provider = %self.entries[i].provider.name(), %message, "health probe failed");
            }
            health[i].probed(result.is_ok(), now);
        }
    }

    /// Seconds between probes (`None`: probes are off).
    pub fn probe_interval(&self) -> Option<Duration> {
        (self.config.probe_interval_secs > 0.0)
            .then(|| Duration::from_secs_f64(self.config.probe_interval_secs))
    }

    /// Whether the breaker of the provider named `name` is open (for tests and reports).
    pub fn breaker(&self, name: &str) -> Option<BreakerState> {
        let i = self
            .entries
            .iter()
            .position(|e| e.provider.name() == name)?;
        Some(self.lock()[i].state())
    }
}

/// A try in flight: if the caller goes away before it ends (the request future is dropped),
/// the provider's health hears that it was abandoned, so a half-open breaker's probe is not
/// lost with it.
struct PendingTry<'a> {
    health: &'a Mutex<Vec<Health>>,
    i: usize,
    armed: bool,
}

impl Drop for PendingTry<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            health[self.i].abandoned(Instant::now());
        }
    }
}

fn has(capabilities: &Capabilities, route: &RouteConfig) -> bool {
    let each = route.capabilities.iter().all(|c| match c.as_str() {
        "tools" => capabilities.tools,
        "vision" => capabilities.vision,
        "json" => capabilities.json,
        _ => false,
    });
    let context = match (route.min_context, capabilities.context_length) {
        (Some(min), Some(have)) => have >= min,
        (Some(_), None) => false,
        (None, _) => true,
    };
    each && context
}

/// A committed stream as the caller reads it (no task in between): its outcome is recorded in
/// the provider's health, and it ends with a failure if the overall deadline passes first.
/// Dropped before its end, it counts as abandoned (and the provider's stream, dropped with it,
/// cancels the generation).
struct Committed {
    first: Option<GenerationEvent>,
    events: EventStream,
    health: Arc<Mutex<Vec<Health>>>,
    i: usize,
    started: Instant,
    ttft: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
    /// The gates' slots, held until the stream is dropped.
    _permits: Permits,
}

impl Committed {
    fn record(&mut self, outcome: Option<bool>) {
        self.done = true;
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Some(true) => health[self.i].succeeded(self.ttft, self.started.elapsed()),
            Some(false) => health[self.i].failed(Instant::now()),
            None => health[self.i].abandoned(Instant::now()),
        }
    }
}

impl Stream for Committed {
    type Item = GenerationEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<GenerationEvent>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let event = match this.first.take() {
            Some(event) => event,
            None => match this.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(event)) => event,
                Poll::Ready(None) => GenerationEvent::Failed(InferenceError::Unavailable(
                    "the provider ended the stream without finishing it".to_string(),
                )),
                Poll::Pending => {
                    if std::future::Future::poll(this.deadline.as_mut(), cx).is_ready() {
                        this.record(None);
                        return Poll::Ready(Some(GenerationEvent::Failed(
                            InferenceError::DeadlineExceeded("while it was answered".to_string()),
                        )));
                    }
                    return Poll::Pending;
                }
            },
        };
        match &event {
            GenerationEvent::Text(_)
            | GenerationEvent::ToolCall(_)
            | GenerationEvent::Logprobs(_)
            | GenerationEvent::Refusal(_) => {}
            GenerationEvent::Finished { .. } => this.record(Some(true)),
            GenerationEvent::Failed(_) => this.record(Some(false)),
        }
        Poll::Ready(Some(event))
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        if !self.done {
            self.record(None);
        }
    }
}
