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
    /// The sampling settings the caller gave itself (wire names: `temperature`, `max_tokens`,
    /// ...), which a route's parameter set leaves alone.
    pub fixed: std::collections::BTreeSet<&'static str>,
    /// Who asks and how urgently (set by the router; the in-process engine queues by it).
    pub ticket: Option<crate::scheduler::Ticket>,
}

impl ChatRequest {
    /// What a provider must be able to do to take it.
    pub fn needs(&self) -> Needs {
        Self::needs_of(&self.messages, &self.params)
    }

    /// What a provider must be able to do to take `messages` with `params`.
    pub fn needs_of(messages: &[ChatMessage], params: &GenerationParams) -> Needs {
        Needs {
            tools: !params.tools.specs.is_empty()
                || messages
                    .iter()
                    .any(|m| !m.tool_calls.is_empty() || m.role == tabagent_core::Role::Tool),
            vision: messages.iter().any(|m| !m.images.is_empty()),
        }
    }
}

/// What a request needs of the provider that takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Tools offered, or tool turns in the conversation: a remote engine with the `tools`
    /// capability, or the in-process engine (which calls tools through the model's template).
    pub tools: bool,
    /// Images: a remote engine with the `vision` capability.
    pub vision: bool,
}

impl Needs {
    /// Whether it is plain text.
    pub fn is_empty(&self) -> bool {
        !self.tools && !self.vision
    }
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
