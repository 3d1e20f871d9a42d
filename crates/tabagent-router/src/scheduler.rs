//! Who goes next: priority classes, fair queuing across callers, concurrency limits per provider
//! and per model, and per-caller rate limits and token budgets (`[scheduler]`).
//!
//! A generation holds a permit from every gate that limits it (its provider's, its model's) for
//! as long as it runs. When a gate is full, requests wait in it: interactive ones before batch
//! ones, and within a class the callers take turns (round robin), so one caller with a thousand
//! queued requests delays another's next one by at most one turn. A waiter that leaves (its
//! client went away, its deadline passed) leaves the queue; a permit handed to it as it left is
//! passed on, never lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::ConfigError;

/// Which requests go first when a gate is full.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Someone is waiting for the answer (the default).
    #[default]
    Interactive,
    /// Background work: served when no interactive request waits.
    Batch,
}

impl Priority {
    /// `interactive` or `batch`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }

    /// Parses `interactive` or `batch`.
    pub fn parse(text: &str) -> Option<Priority> {
        match text.trim().to_ascii_lowercase().as_str() {
            "interactive" => Some(Priority::Interactive),
            "batch" => Some(Priority::Batch),
            _ => None,
        }
    }
}

/// Limits for one caller (`[scheduler.limits]` for every caller, `[scheduler.keys.NAME]` for
/// one named API key). Zero means no limit.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallerLimits {
    /// A named key's secret, read from this environment variable (named keys only).
    pub key_env: Option<String>,
    /// A named key's secret, given here (named keys only; prefer `key_env`).
    #[serde(skip_serializing)]
    pub key: Option<String>,
    /// The highest priority its requests get (a request may ask for a lower one).
    pub priority: Priority,
    /// Requests per minute (a bucket that refills continuously; bursts up to the full minute).
    pub requests_per_minute: u32,
    /// Prompt and generated tokens per minute.
    pub tokens_per_minute: u64,
    /// Prompt and generated tokens per day (refilled continuously).
    pub tokens_per_day: u64,
    /// An administrator's key (named keys only): it may use what the server holds for its
    /// operator, such as the Hugging Face token for private and gated repositories.
    pub admin: bool,
}

impl std::fmt::Debug for CallerLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerLimits")
            .field("key_env", &self.key_env)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("priority", &self.priority)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("tokens_per_day", &self.tokens_per_day)
            .field("admin", &self.admin)
            .finish()
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Requests waiting at one gate, at most; more are turned away (503 with Retry-After).
    pub max_queued: usize,
    /// Generations one local model runs at once, waiting here beyond that (0: no limit here;
    /// the engine's own line, which orders by priority and caller too, is the only one).
    pub local_concurrency: u32,
    /// Generations at once per model name (any provider), for the models listed.
    pub model_concurrency: BTreeMap<String, u32>,
    /// Every caller's limits (each API key's, and callers without one together).
    pub limits: CallerLimits,
    /// Named API keys with their own limits; their secrets are accepted as API keys too.
    pub keys: BTreeMap<String, CallerLimits>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_queued: 1024,
            local_concurrency: 0,
            model_concurrency: BTreeMap::new(),
            limits: CallerLimits::default(),
            keys: BTreeMap::new(),
        }
    }
}

impl SchedulerConfig {
    /// Refuses zero limits where zero cannot mean "none", and secrets on the shared limits.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.max_queued == 0 {
            return bad("scheduler.max_queued must be at least 1".to_string());
        }
        for (model, n) in &self.model_concurrency {
            if *n == 0 {
                return bad(format!(
                    "scheduler.model_concurrency: `{model}` must be at least 1"
                ));
            }
        }
        if self.limits.key.is_some() || self.limits.key_env.is_some() || self.limits.admin {
            return bad(
                "scheduler.limits applies to every caller: put a key under scheduler.keys.NAME"
                    .to_string(),
            );
        }
        for (name, key) in &self.keys {
            if name.is_empty()
                || name == ANONYMOUS
                || name.starts_with("key:")
                || name.contains('/')
            {
                return bad(format!(
                    "scheduler.keys: `{name}` cannot name a caller (reserved, empty, `key:…` or with a `/`)"
                ));
            }
            if key.key.is_some() == key.key_env.is_some() {
                return bad(format!(
                    "scheduler.keys.{name}: give exactly one of key_env and key"
                ));
            }
        }
        Ok(())
    }
}

/// The caller name of requests that carry no API key.
pub const ANONYMOUS: &str = "anonymous";

/// Who is asking, how urgently, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The caller (a named key, `key:<fingerprint>`, or `anonymous`), for fairness and limits.
    pub caller: Arc<str>,
    /// Its class.
    pub priority: Priority,
    /// When the request must be over, queueing included.
    pub deadline: Option<Instant>,
}

impl Ticket {
    /// An interactive request from `caller` without a deadline of its own.
    pub fn new(caller: &str) -> Ticket {
        Ticket {
            caller: Arc::from(caller),
            priority: Priority::Interactive,
            deadline: None,
        }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    /// The caller used up a rate limit or token budget.
    #[error("{caller} is over its {limit}; retry in {} s", retry_after.as_secs_f64().ceil())]
    OverLimit {
        /// Who.
        caller: String,
        /// Which limit (`requests per minute`, ...).
        limit: &'static str,
        /// When it will have room again.
        retry_after: Duration,
    },
    /// Too many requests already wait for the same provider or model.
    #[error("{queued} requests are already waiting for {gate}")]
    QueueFull {
        /// The provider or model.
        gate: String,
        /// How many wait.
        queued: usize,
    },
    /// The request's deadline passed while it waited.
    #[error("the request's deadline passed while it waited for {gate}")]
    Deadline {
        /// The provider or model it waited for.
        gate: String,
    },
}

/// A token bucket: `capacity` at most, refilled at `per_sec`; it may go below zero when usage
/// is charged after the fact, and then lets nothing through until it has refilled above zero.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: f64, window: Duration, now: Instant) -> Bucket {
        Bucket {
            capacity,
            per_sec: capacity / window.as_secs_f64(),
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.at = now.max(self.at);
    }

    /// How long until `need` fits (zero: it fits now).
    fn wait_for(&mut self, need: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.level >= need {
            Duration::ZERO
        } else {
            // A debt too large for a `Duration` (say a day's budget overdrawn many times) is
            // capped rather than allowed to panic.
            Duration::try_from_secs_f64((need - self.level) / self.per_sec)
                .unwrap_or(Duration::from_secs(u32::MAX.into()))
        }
    }
}

/// One caller's buckets.
#[derive(Debug)]
struct Account {
    requests: Option<Bucket>,
    tokens_minute: Option<Bucket>,
    tokens_day: Option<Bucket>,
}

impl Account {
    fn new(limits: &CallerLimits, now: Instant) -> Account {
        let minute = Duration::from_secs(60);
        let day = Duration::from_secs(86_400);
        let bucket = |n: u64, window| (n > 0).then(|| Bucket::new(n as f64, window, now));
        Account {
            requests: bucket(u64::from(limits.requests_per_minute), minute),
            tokens_minute: bucket(limits.tokens_per_minute, minute),
            tokens_day: bucket(limits.tokens_per_day, day),
        }
    }
}

/// Concurrency limits, queues and per-caller accounts.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    accounts: Mutex<HashMap<Arc<str>, Account>>,
    /// Concurrency per provider (configured for remote ones; the local engine's slots).
    provider_concurrency: HashMap<String, u32>,
}

/// What a generation holds while it runs: dropping it lets the next request in.
#[derive(Debug, Default)]
pub struct Permits {
    _held: Vec<Permit>,
}

impl Scheduler {
    /// A scheduler for `config`, with `provider_concurrency` per provider name.
    pub fn new(config: SchedulerConfig, provider_concurrency: HashMap<String, u32>) -> Scheduler {
        Scheduler {
            config,
            gates: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
            provider_concurrency,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    fn limits(&self, caller: &str) -> &CallerLimits {
        self.config.keys.get(caller).unwrap_or(&self.config.limits)
    }

    /// The priority `caller` gets when asking for `asked` (never above its key's).
    pub fn priority(&self, caller: &str, asked: Option<Priority>) -> Priority {
        let ceiling = self.limits(caller).priority;
        asked.map_or(ceiling, |p| p.max(ceiling))
    }

    /// Lets a request from `caller` in, or says which limit it is over and for how long.
    /// Counts the request against its rate; tokens are charged when it ends ([`Self::charge`]).
    pub fn admit(&self, caller: &Arc<str>, now: Instant) -> Result<(), Refused> {
        let limits = self.limits(caller);
        let mut accounts = lock(&self.accounts);
        let account = accounts
            .entry(Arc::clone(caller))
            .or_insert_with(|| Account::new(limits, now));
        let over = |limit: &'static str, retry_after: Duration| Refused::OverLimit {
            caller: caller.to_string(),
            limit,
            retry_after,
        };
        // Token budgets first: a request refused for them must not use up a request slot.
        // Any budget above zero lets a request start (its size is not known yet).
        for (bucket, limit) in [
            (&mut account.tokens_minute, "tokens per minute"),
            (&mut account.tokens_day, "tokens per day"),
        ] {
            if let Some(bucket) = bucket {
                let wait = bucket.wait_for(f64::MIN_POSITIVE, now);
                if !wait.is_zero() {
                    return Err(over(limit, wait));
                }
            }
        }
        if let Some(bucket) = &mut account.requests {
            let wait = bucket.wait_for(1.0, now);
            if !wait.is_zero() {
                return Err(over("requests per minute", wait));
            }
            bucket.level -= 1.0;
        }
        Ok(())
    }

    /// Charges `tokens` a request used to `caller`'s budgets.
    pub fn charge(&self, caller: &Arc<str>, tokens: u64, now: Instant) {
        if tokens == 0 {
            return;
        }
        let limits = self.limits(caller);
        let mut accounts = lock(&self.accounts);
        let account = accounts
            .entry(Arc::clone(caller))
            .or_insert_with(|| Account::new(limits, now));
        for bucket in [&mut account.tokens_minute, &mut account.tokens_day]
            .into_iter()
            .flatten()
        {
            bucket.refill(now);
            bucket.level -= tokens as f64;
        }
    }

    /// What `caller` has left: (requests this minute, tokens this minute, tokens today); `None`
    /// where there is no limit.
    pub fn remaining(&self, caller: &Arc<str>, now: Instant) -> [Option<f64>; 3] {
        let limits = self.limits(caller);
        let mut accounts = lock(&self.accounts);
        let account = accounts
            .entry(Arc::clone(caller))
            .or_insert_with(|| Account::new(limits, now));
        [
            &mut account.requests,
            &mut account.tokens_minute,
            &mut account.tokens_day,
        ]
        .map(|bucket| {
            bucket.as_mut().map(|b| {
                b.refill(now);
                b.level.max(0.0)
            })
        })
    }

    /// The gates limiting a generation of `model` by `provider`.
    fn gates_for(&self, provider: &str, model: &str) -> Vec<Arc<Gate>> {
        let mut gates = lock(&self.gates);
        let mut found = Vec::new();
        let mut gate = |name: String, capacity: u32| {
            let gate = gates
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Gate::new(name, capacity as usize)));
            found.push(Arc::clone(gate));
        };
        if let Some(&n) = self.provider_concurrency.get(provider) {
            if n > 0 {
                gate(format!("provider {provider}"), n);
            }
        }
        if provider == crate::LOCAL && self.config.local_concurrency > 0 {
            gate(
                format!("local model {model}"),
                self.config.local_concurrency,
            );
        }
        if let Some(&n) = self.config.model_concurrency.get(model) {
            gate(format!("model {model}"), n);
        }
        found
    }

    /// Permits for `model` on `provider` if every gate has room now and nobody waits ahead.
    pub fn try_enter(&self, provider: &str, model: &str) -> Option<Permits> {
        let mut permits = Vec::new();
        for gate in self.gates_for(provider, model) {
            permits.push(gate.try_acquire()?);
        }
        Some(Permits { _held: permits })
    }

    /// Waits, in `ticket`'s class and turn, for permits for `model` on `provider`.
    pub async fn enter(
        &self,
        ticket: &Ticket,
        provider: &str,
        model: &str,
    ) -> Result<Permits, Refused> {
        let mut permits = Vec::new();
        // Always in the same order (provider, then model), so two requests never hold one
        // each of the other's gates.
        for gate in self.gates_for(provider, model) {
            let waiting = gate.acquire(ticket, self.config.max_queued)?;
            let permit = match ticket.deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), waiting)
                    .await
                    .map_err(|_| Refused::Deadline {
                        gate: gate.name.clone(),
                    })?,
                None => waiting.await,
            };
            permits.push(permit);
        }
        Ok(Permits { _held: permits })
    }

    /// Requests waiting and running at each gate, for metrics: (gate, waiting, running).
    pub fn gates(&self) -> Vec<(String, usize, usize)> {
        let gates = lock(&self.gates);
        let mut out: Vec<_> = gates
            .values()
            .map(|g| {
                let state = lock(&g.state);
                (g.name.clone(), state.waiting, state.running)
            })
            .collect();
        out.sort();
        out
    }
}

/// A fair, priority-ordered semaphore.
#[derive(Debug)]
struct Gate {
    name: String,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    capacity: usize,
    running: usize,
    waiting: usize,
    /// Per priority class (interactive first): callers in turn order, each with its waiters.
    classes: [Class; 2],
    next_id: u64,
}

#[derive(Debug, Default)]
struct Class {
    turns: VecDeque<Arc<str>>,
    waiters: HashMap<Arc<str>, VecDeque<Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// A slot in one gate, given back when dropped.
#[derive(Debug)]
struct Permit {
    gate: Arc<Gate>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Gate {
    fn new(name: String, capacity: usize) -> Gate {
        Gate {
            name,
            state: Mutex::new(GateState {
                capacity,
                running: 0,
                waiting: 0,
                classes: [Class::default(), Class::default()],
                next_id: 0,
            }),
        }
    }

    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut state = lock(&self.state);
        if state.running < state.capacity && state.waiting == 0 {
            state.running += 1;
            Some(Permit {
                gate: Arc::clone(self),
            })
        } else {
            None
        }
    }

    /// A slot now, or a place in the queue (refused when `max_queued` already wait).
    fn acquire(self: &Arc<Self>, ticket: &Ticket, max_queued: usize) -> Result<Waiting, Refused> {
        let mut state = lock(&self.state);
        if state.running < state.capacity && state.waiting == 0 {
            state.running += 1;
            return Ok(Waiting::granted(Arc::clone(self)));
        }
        if state.waiting >= max_queued {
            return Err(Refused::QueueFull {
                gate: self.name.clone(),
                queued: state.waiting,
            });
        }
        let id = state.next_id;
        state.next_id += 1;
        let (grant, granted) = oneshot::channel();
        let class = &mut state.classes[ticket.priority as usize];
        let queue = class.waiters.entry(Arc::clone(&ticket.caller)).or_default();
        if queue.is_empty() {
            class.turns.push_back(Arc::clone(&ticket.caller));
        }
        queue.push_back(Waiter { id, grant });
        state.waiting += 1;
        Ok(Waiting {
            gate: Arc::clone(self),
            state: WaitState::Queued {
                id,
                priority: ticket.priority,
                caller: Arc::clone(&ticket.caller),
                granted,
            },
        })
    }

    /// A slot came free: it goes to the next waiter in turn, or back to the pool.
    fn release(&self) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        for class in &mut state.classes {
            while let Some(caller) = class.turns.pop_front() {
                let Some(queue) = class.waiters.get_mut(&caller) else {
                    continue;
                };
                let waiter = queue.pop_front();
                if queue.is_empty() {
                    class.waiters.remove(&caller);
                } else {
                    class.turns.push_back(caller);
                }
                if let Some(waiter) = waiter {
                    state.waiting -= 1;
                    // The receiver lives as long as the waiter is queued (it removes itself
                    // under this lock before going), so the grant always arrives.
                    let _ = waiter.grant.send(());
                    return;
                }
            }
        }
        state.running -= 1;
    }

    /// Takes waiter `id` out of the queue; false if it was already granted a slot.
    fn withdraw(&self, id: u64, priority: Priority, caller: &Arc<str>) -> bool {
        let mut state = lock(&self.state);
        let class = &mut state.classes[priority as usize];
        let Some(queue) = class.waiters.get_mut(caller) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        if queue.is_empty() {
            class.waiters.remove(caller);
            class.turns.retain(|c| c != caller);
        }
        state.waiting -= 1;
        true
    }
}

/// A place in a gate's queue; resolves to a permit. Dropped before it resolves, it leaves the
/// queue, or passes on a slot granted to it in the meantime.
struct Waiting {
    gate: Arc<Gate>,
    state: WaitState,
}

enum WaitState {
    /// A slot was free: it is reserved for this waiter.
    Reserved,
    /// In the queue, until granted.
    Queued {
        id: u64,
        priority: Priority,
        caller: Arc<str>,
        granted: oneshot::Receiver<()>,
    },
    /// The permit was handed out.
    Done,
}

impl Waiting {
    fn granted(gate: Arc<Gate>) -> Waiting {
        Waiting {
            gate,
            state: WaitState::Reserved,
        }
    }
}

impl std::future::Future for Waiting {
    type Output = Permit;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Permit> {
        use std::task::Poll;
        if let WaitState::Queued { granted, .. } = &mut self.state {
            // An error cannot happen: the sender is dropped only after sending, or after this
            // waiter withdrew (which it does only when dropped).
            if std::pin::Pin::new(granted).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.state = WaitState::Done;
        Poll::Ready(Permit {
            gate: Arc::clone(&self.gate),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, WaitState::Done) {
            WaitState::Reserved => self.gate.release(),
            WaitState::Queued {
                id,
                priority,
                caller,
                ..
            } => {
                if !self.gate.withdraw(id, priority, &caller) {
                    // Granted while leaving: hand the slot to the next waiter.
                    self.gate.release();
                }
            }
            WaitState::Done => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::future::Future;
    use std::pin::Pin;

    type Entering<'a> = Pin<Box<dyn Future<Output = Result<Permits, Refused>> + 'a>>;

    fn one_slot_per_model() -> Scheduler {
        let config = SchedulerConfig {
            model_concurrency: [("m".to_string(), 1)].into(),
            max_queued: 4,
            ..SchedulerConfig::default()
        };
        Scheduler::new(config, HashMap::new())
    }

    fn ticket(caller: &str, priority: Priority) -> Ticket {
        Ticket {
            priority,
            ..Ticket::new(caller)
        }
    }

    /// Starts waiting (one poll puts it in the queue).
    fn queue<'a>(scheduler: &'a Scheduler, ticket: &'a Ticket) -> Entering<'a> {
        let mut entering: Entering<'a> = Box::pin(scheduler.enter(ticket, "p", "m"));
        assert!((&mut entering).now_or_never().is_none(), "the gate is full");
        entering
    }

    /// Which of `waiting` now holds the slot (exactly one must).
    fn granted(waiting: &mut [Option<Entering<'_>>]) -> (usize, Permits) {
        let mut found = None;
        for (k, slot) in waiting.iter_mut().enumerate() {
            if let Some(entering) = slot {
                if let Some(result) = entering.now_or_never() {
                    assert!(found.is_none(), "two waiters got one slot");
                    found = Some((k, result.unwrap()));
                    *slot = None;
                }
            }
        }
        found.expect("nobody got the slot")
    }

    #[tokio::test]
    async fn interactive_requests_go_before_batch_and_callers_take_turns() {
        let scheduler = one_slot_per_model();
        let running = scheduler.try_enter("p", "m").unwrap();
        assert!(scheduler.try_enter("p", "m").is_none());
        let tickets = [
            ticket("a", Priority::Batch),
            ticket("x", Priority::Interactive),
            ticket("x", Priority::Interactive),
            ticket("y", Priority::Interactive),
            ticket("z", Priority::Interactive),
        ];
        // Up to 4 may queue (a, x, x, then y): z is turned away.
        let mut waiting: Vec<Option<Entering<'_>>> = tickets[..4]
            .iter()
            .map(|t| Some(queue(&scheduler, t)))
            .collect();
        let refused = scheduler.enter(&tickets[4], "p", "m").now_or_never();
        assert!(matches!(
            refused,
            Some(Err(Refused::QueueFull { queued: 4, .. }))
        ));
        let mut order = Vec::new();
        let mut slot = running;
        for _ in 0..4 {
            drop(slot);
            let (next, permit) = granted(&mut waiting);
            order.push(next);
            slot = permit;
        }
        // x's first request, then y's (which came after x's second, but it is y's turn), then
        // x's second; batch last.
        assert_eq!(order, vec![1, 3, 2, 0]);
        drop(slot);
        assert_eq!(scheduler.gates(), vec![("model m".to_string(), 0, 0)]);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_passes_its_slot_on() {
        let scheduler = one_slot_per_model();
        let running = scheduler.try_enter("p", "m").unwrap();
        let (a, b, c) = (Ticket::new("a"), Ticket::new("b"), Ticket::new("c"));
        let leaving_early = queue(&scheduler, &a);
        let granted_then_leaving = queue(&scheduler, &b);
        let mut last = vec![Some(queue(&scheduler, &c))];
        drop(leaving_early);
        assert_eq!(scheduler.gates(), vec![("model m".to_string(), 2, 1)]);
        drop(running);
        // b was granted the slot but goes without taking it: c gets it.
        drop(granted_then_leaving);
        let (_, permit) = granted(&mut last);
        assert_eq!(scheduler.gates(), vec![("model m".to_string(), 0, 1)]);
        drop(permit);
        assert_eq!(scheduler.gates(), vec![("model m".to_string(), 0, 0)]);
        assert!(scheduler.try_enter("p", "m").is_some());
    }

    #[tokio::test]
    async fn a_deadline_that_passes_in_the_queue_refuses_the_request() {
        let scheduler = one_slot_per_model();
        let _running = scheduler.try_enter("p", "m").unwrap();
        let late = Ticket {
            deadline: Some(Instant::now()),
            ..Ticket::new("a")
        };
        let refused = scheduler.enter(&late, "p", "m").await;
        assert!(matches!(refused, Err(Refused::Deadline { .. })));
        assert_eq!(scheduler.gates(), vec![("model m".to_string(), 0, 1)]);
    }

    #[test]
    fn rate_limits_and_token_budgets_refuse_until_they_refill() {
        let config = SchedulerConfig {
            limits: CallerLimits {
                requests_per_minute: 2,
                ..CallerLimits::default()
            },
            keys: [(
                "tight".to_string(),
                CallerLimits {
                    key: Some("k".repeat(16)),
                    tokens_per_day: 100,
                    priority: Priority::Batch,
                    ..CallerLimits::default()
                },
            )]
            .into(),
            ..SchedulerConfig::default()
        };
        config.check().unwrap();
        let scheduler = Scheduler::new(config, HashMap::new());
        let t0 = Instant::now();
        let anyone: Arc<str> = Arc::from("anyone");
        assert!(scheduler.admit(&anyone, t0).is_ok());
        assert!(scheduler.admit(&anyone, t0).is_ok());
        match scheduler.admit(&anyone, t0) {
            Err(Refused::OverLimit {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, "requests per minute");
                assert_eq!(retry_after, Duration::from_secs(30));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(scheduler
            .admit(&anyone, t0 + Duration::from_secs(30))
            .is_ok());
        // The named key has no request limit but a token budget, charged after the fact.
        let tight: Arc<str> = Arc::from("tight");
        for _ in 0..5 {
            assert!(scheduler.admit(&tight, t0).is_ok());
        }
        scheduler.charge(&tight, 250, t0);
        match scheduler.admit(&tight, t0) {
            Err(Refused::OverLimit {
                limit, retry_after, ..
            }) => {
                assert_eq!(limit, "tokens per day");
                // 150 tokens in deficit at 100 a day.
                assert_eq!(retry_after.as_secs(), 86_400 * 3 / 2);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(scheduler.remaining(&tight, t0), [None, None, Some(0.0)]);
        let later = t0 + Duration::from_secs(86_400 * 2);
        assert!(scheduler.admit(&tight, later).is_ok());
        // A batch key cannot ask to be interactive; anyone can ask to be batch.
        assert_eq!(
            scheduler.priority("tight", Some(Priority::Interactive)),
            Priority::Batch
        );
        assert_eq!(scheduler.priority("anyone", None), Priority::Interactive);
        assert_eq!(
            scheduler.priority("anyone", Some(Priority::Batch)),
            Priority::Batch
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let shared_secret = SchedulerConfig {
            limits: CallerLimits {
                key_env: Some("K".to_string()),
                ..CallerLimits::default()
            },
            ..SchedulerConfig::default()
        };
        assert!(shared_secret.check().is_err());
        let no_secret = SchedulerConfig {
            keys: [("k".to_string(), CallerLimits::default())].into(),
            ..SchedulerConfig::default()
        };
        assert!(no_secret.check().unwrap_err().0.contains("key_env"));
        let reserved = SchedulerConfig {
            keys: [(
                ANONYMOUS.to_string(),
                CallerLimits {
                    key_env: Some("K".to_string()),
                    ..CallerLimits::default()
                },
            )]
            .into(),
            ..SchedulerConfig::default()
        };
        assert!(reserved.check().is_err());
    }
}
