//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! Counted as they happen: HTTP requests by route template (never the raw path, so a client
//! cannot grow the label set) and status, their time to response headers, and for every
//! generation its time to first token, tokens and decode rate, by model and provider. Read when
//! scraped: each loaded model's running and queued sequences, each scheduler gate's waiting and
//! running requests, and each provider's breaker
//! state, time to first token and error rate as the router sees them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tabagent_core::Usage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenerationLabels {
    model: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

type Seconds = Family<GenerationLabels, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    ttft_seconds: Seconds,
    tokens: Family<GenerationLabels, Counter>,
    tokens_per_second: Seconds,
    active: Family<ModelLabels, Gauge>,
    queued: Family<ModelLabels, Gauge>,
    breaker: Family<ProviderLabels, Gauge>,
    provider_ttft: Family<ProviderLabels, Gauge<f64, AtomicU64>>,
    provider_errors: Family<ProviderLabels, Gauge<f64, AtomicU64>>,
    cache_lookups: Family<CacheLabels, Counter>,
    surprise: Family<SurpriseLabels, Counter>,
    cache_redis_errors: Gauge,
    events_waiting: Gauge,
    gate_waiting: Family<GateLabels, Gauge>,
    gate_running: Family<GateLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SurpriseLabels {
    decision: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn rate_buckets() -> Histogram {
    // 1 to about 4,000 tokens per second.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tabagent");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let request_seconds = Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to response headers (for a stream, until it starts)",
            request_seconds.clone(),
        );
        let ttft_seconds: Seconds = Family::new_with_constructor(latency_buckets);
        registry.register(
            "time_to_first_token_seconds",
            "From the handler receiving a generation request to its first token",
            ttft_seconds.clone(),
        );
        let tokens = Family::<GenerationLabels, Counter>::default();
        registry.register("generated_tokens", "Tokens generated", tokens.clone());
        let tokens_per_second: Seconds = Family::new_with_constructor(rate_buckets);
        registry.register(
            "decode_tokens_per_second",
            "Tokens per second after the first, per generation",
            tokens_per_second.clone(),
        );
        let active = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_active_sequences",
            "Sequences generating now",
            active.clone(),
        );
        let queued = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_queue_depth",
            "Requests waiting for a sequence",
            queued.clone(),
        );
        let breaker = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        let provider_ttft = Family::<ProviderLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "provider_ttft_seconds",
            "Moving average of each provider's time to first token",
            provider_ttft.clone(),
        );
        let provider_errors = Family::<ProviderLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "provider_error_rate",
            "Moving average of each provider's failed tries (0 to 1)",
            provider_errors.clone(),
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "response_cache_lookups",
            "Response cache lookups by result (hit or miss)",
            cache_lookups.clone(),
        );
        let surprise = Family::<SurpriseLabels, Counter>::default();
        registry.register(
            "memory_surprise",
            "Conversation turns and agent runs the surprise gate saw, by decision (kept, dropped, skipped: too short or a question, failed)",
            surprise.clone(),
        );
        let cache_redis_errors = Gauge::default();
        registry.register(
            "response_cache_redis_errors",
            "Redis operations the response cache skipped (Redis down or slow)",
            cache_redis_errors.clone(),
        );
        let events_waiting = Gauge::default();
        registry.register(
            "events_waiting",
            "Events in the outbox not yet in Redis ([events]; Redis away or slow)",
            events_waiting.clone(),
        );
        let gate_waiting = Family::<GateLabels, Gauge>::default();
        registry.register(
            "scheduler_waiting",
            "Requests waiting at each concurrency limit (a provider, a model)",
            gate_waiting.clone(),
        );
        let gate_running = Family::<GateLabels, Gauge>::default();
        registry.register(
            "scheduler_running",
            "Generations holding a slot of each concurrency limit",
            gate_running.clone(),
        );
        Self {
            registry,
            gate_waiting,
            gate_running,
            cache_lookups,
            surprise,
            cache_redis_errors,
            events_waiting,
            requests,
            request_seconds,
            ttft_seconds,
            tokens,
            tokens_per_second,
            active,
            queued,
            breaker,
            provider_ttft,
            provider_errors,
        }
    }
}

impl Metrics {
    /// Counts one HTTP request answered after `seconds`.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a response cache lookup.
    pub fn cache_lookup(&self, result: &'static str) {
        self.cache_lookups
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// Counts one decision of the surprise gate.
    pub fn surprise(&self, decision: &'static str) {
        self.surprise
            .get_or_create(&SurpriseLabels { decision })
            .inc();
    }

    /// A watch on one generation of `model` by `provider`, asked for at `started`.
    pub fn watch(self: &Arc<Self>, model: &str, provider: &str, started: Instant) -> Watch {
        Watch {
            metrics: Some(Arc::clone(self)),
            labels: GenerationLabels {
                model: model.to_string(),
                provider: provider.to_string(),
            },
            started,
            first_token: None,
            charge: None,
            pieces: 0,
        }
    }

    /// The exposition text, after reading the gauges from `state`.
    pub fn render(&self, state: &crate::state::AppState) -> String {
        for (name, engine) in state.registry().loaded() {
            if let crate::registry::Engine::Llama(engine) = engine {
                let stats = engine.stats();
                let labels = ModelLabels { model: name };
                self.active.get_or_create(&labels).set(stats.active as i64);
                self.queued.get_or_create(&labels).set(stats.queued as i64);
            }
        }
        for provider in state.router().status() {
            let labels = ProviderLabels {
                provider: provider.name,
            };
            let state = match provider.breaker {
                "closed" => 0,
                "half_open" => 1,
                _ => 2,
            };
            self.breaker.get_or_create(&labels).set(state);
            if let Some(ttft) = provider.ttft_seconds {
                self.provider_ttft.get_or_create(&labels).set(ttft);
            }
            if let Some(errors) = provider.error_rate {
                self.provider_errors.get_or_create(&labels).set(errors);
            }
        }
        self.cache_redis_errors
            .set(state.cache().stats().redis_errors as i64);
        if let Some(events) = state.events() {
            self.events_waiting.set(events.waiting() as i64);
        }
        for (gate, waiting, running) in state.scheduler().gates() {
            let labels = GateLabels { gate };
            self.gate_waiting.get_or_create(&labels).set(waiting as i64);
            self.gate_running.get_or_create(&labels).set(running as i64);
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "could not encode the metrics");
        }
        text
    }
}

/// Observes one generation: its first token and how it ended.
pub struct Watch {
    metrics: Option<Arc<Metrics>>,
    labels: GenerationLabels,
    started: Instant,
    first_token: Option<Instant>,
    charge: Option<Charge>,
    /// Pieces of text seen (about one token each), charged when no usage arrives.
    pieces: u64,
}

impl Watch {
    /// Charges the tokens of the generation, when it finishes, to a caller's budgets.
    pub fn charging(mut self, charge: Charge) -> Watch {
        self.charge = Some(charge);
        self
    }

    /// Text arrived.
    pub fn text(&mut self) {
        self.pieces += 1;
        if self.first_token.is_none() {
            let now = Instant::now();
            self.first_token = Some(now);
            if let Some(metrics) = &self.metrics {
                metrics
                    .ttft_seconds
                    .get_or_create(&self.labels)
                    .observe((now - self.started).as_secs_f64());
            }
        }
    }

    /// The generation finished with `usage`.
    pub fn finished(&mut self, usage: Usage) {
        if let Some(charge) = self.charge.take() {
            // An upstream that reports no usage is charged for the pieces of text it sent.
            let reported = u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
            charge.tokens(reported.max(self.pieces));
        }
        let Some(metrics) = &self.metrics else {
            return;
        };
        let tokens = u64::from(usage.completion_tokens);
        metrics.tokens.get_or_create(&self.labels).inc_by(tokens);
        if let Some(first) = self.first_token {
            let decoding = first.elapsed().as_secs_f64();
            if tokens > 1 && decoding > 0.0 {
                metrics
                    .tokens_per_second
                    .get_or_create(&self.labels)
                    .observe((tokens - 1) as f64 / decoding);
            }
        }
    }
}

impl Drop for Watch {
    /// A generation that never finished (the client left, the stream failed or ran out of
    /// time) is still charged for what was generated, so leaving early does not dodge a budget.
    fn drop(&mut self) {
        if let Some(charge) = self.charge.take() {
            charge.tokens(self.pieces);
        }
    }
}

/// Counts every request by its route template (`MatchedPath`), method and status.
pub async fn track(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn serve(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(&state),
    )
}

/// What a finished generation charges to its caller's token budgets.
pub struct Charge {
    state: crate::state::AppState,
    caller: std::sync::Arc<str>,
}

impl Charge {
    /// Charges to `ticket`'s caller.
    pub fn new(state: &crate::state::AppState, ticket: &tabagent_router::Ticket) -> Charge {
        Charge {
            state: state.clone(),
            caller: std::sync::Arc::clone(&ticket.caller),
        }
    }

    /// `tokens` were used.
    pub fn tokens(&self, tokens: u64) {
        self.state
            .scheduler()
            .charge(&self.caller, tokens, std::time::Instant::now());
    }
}
