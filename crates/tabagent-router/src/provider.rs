//! What the router routes to: anything that turns a chat request into a stream of generation
//! events, here or across the network.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tabagent_core::{ChatMessage, GenerationEvent, GenerationParams, InferenceError};
/// A boxed future (the trait is used as `dyn Provider`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A generation's events, read by whoever consumes them (no task in between): it ends with one
/// `Finished` or `Failed`, and dropping it cancels the generation.
pub type EventStream = Pin<Box<dyn futures_util::Stream<Item = GenerationEvent> + Send>>;

/// A chat request, as the router passes it to every provider it tries.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// A raw prompt to continue instead (legacy completions, `/completions` upstream);
    /// `messages` is then empty.
    pub prompt: Option<String>,
    /// Sampling and limits.
    pub params: GenerationParams,
    /// The trace it belongs to, continued on remote engines (`traceparent`).
    pub trace: Option<crate::trace::TraceParent>,
    /// What only a remote engine can take, sent to it as the caller wrote it (such a request
    /// is never routed to the in-process engine).
    pub passthrough: Option<Passthrough>,
    /// The sampling settings the caller gave itself (wire names: `temperature`, `max_tokens`,
    /// ...), which a route's parameter set leaves alone.
    pub fixed: std::collections::BTreeSet<&'static str>,
    /// Who asks and how urgently (set by the router; the in-process engine queues by it).
    pub ticket: Option<crate::scheduler::Ticket>,
}

/// Parts of a request sent on to a remote engine as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Passthrough {
    /// The messages as the caller sent them (tool calls and results, images), instead of the
    /// text-only conversation.
    pub messages: Option<serde_json::Value>,
    /// More body fields: `tools`, `tool_choice`, `parallel_tool_calls`, `logprobs`,
    /// `top_logprobs`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// It needs a provider with the `tools` capability.
    pub needs_tools: bool,
    /// It needs a provider with the `vision` capability.
    pub needs_vision: bool,
}

/// Why a try did not start.
#[derive(Debug, Clone, PartialEq)]
pub enum TryError {
    /// The request is at fault: every provider would refuse it, so none other is tried.
    Caller(InferenceError),
    /// The provider is at fault (down, overloaded, broken): the next one is tried.
    Provider {
        /// What happened, for logs and the final error.
        message: String,
        /// It asked not to be called again before this long (429 Retry-After).
        retry_after: Option<Duration>,
    },
}

/// An engine the router can send requests to.
pub trait Provider: Send + Sync + 'static {
    /// Its name (`local` for the in-process engine).
    fn name(&self) -> &str;

    /// Whether it serves `model`, for providers whose models are not listed in the
    /// configuration (the in-process engine's change as models are pulled).
    fn serves(&self, _model: &str) -> bool {
        false
    }

    /// The model a route sends to it when its models are not listed in the configuration.
    fn default_model(&self) -> Option<String> {
        None
    }

    /// Checks that it answers at all (an active health probe, between requests).
    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Starts generating.
    fn start<'a>(
        &'a self,
        model: &'a str,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, TryError>>;
}
