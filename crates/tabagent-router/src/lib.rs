//! tabagent's router: one chat request, many possible engines. It picks providers by the model
//! or route the request names, their capabilities, tier and health; tries them in order until
//! one produces a first token (failing over only before that point, so a stream is never
//! spliced from two providers or sent twice); and keeps each provider's health: a circuit
//! breaker, a Retry-After cool-down, and moving averages of latency, time to first token and
//! errors.
//!
//! Providers are the in-process engine (implemented by the server, which owns it) and remote
//! engines speaking OpenAI's API ([`OpenAiProvider`]).

mod analytics;
mod cache;
mod config;
mod health;
mod openai;
mod provider;
mod router;
mod scheduler;
mod semantic;
mod session_table;
mod trace;

pub use analytics::{Analytics, Arm, ArmId, FeedbackError};
pub use cache::{
    session_bytes, CacheConfig, CacheStats, CachedAnswer, ResponseCache, Session, SessionMessage,
};
pub use config::{
    Capabilities, ConfigError, ContextConfig, ContextSource, Cost, ParameterSet, ProviderConfig,
    RouteConfig, RouterConfig, Tier,
};
pub use health::{BreakerPolicy, BreakerState, Ewma, Health, Unavailable};
pub use openai::{message_json, request_body, ChunkParser, OpenAiProvider};
pub use provider::{BoxFuture, ChatRequest, EventStream, Needs, Provider, TryError};
pub use router::{Plan, ProviderStatus, RouteError, Routed, Router, Target};
pub use scheduler::{
    CallerLimits, Permits, Priority, Refused, Scheduler, SchedulerConfig, Ticket, ANONYMOUS,
};
pub use semantic::{SemanticCache, SemanticQuery};
pub use trace::TraceParent;

/// The in-process engine's provider name.
pub const LOCAL: &str = "local";
