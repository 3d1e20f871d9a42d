//! Writing a generation's events as an OpenAI-style server-sent event stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::response::sse::{Event, Sse};
use futures_util::Stream;
use tabagent_core::{FinishReason, GenerationEvent, TokenLogprob, ToolCallDelta, Usage};

use super::error::ApiError;
use super::wire::WireUsage;
use crate::generation::Events;

/// How a stream's chunks are written for one endpoint.
pub trait ChunkFormat: Send + Unpin + 'static {
    /// A chunk sent before any text (chat sends the role), if any.
    fn opening(&self) -> Option<String>;
    /// A chunk carrying new text, with the log probabilities of the tokens since the last
    /// chunk (empty unless they were asked for).
    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String;
    /// The chunk carrying the finish reason (and, where the endpoint has a place for them,
    /// the times in `usage`).
    fn finish(&self, reason: FinishReason, usage: &Usage) -> String;
    /// The usage chunk.
    fn usage(&self, usage: WireUsage) -> String;
    /// A chunk carrying a piece of a tool call, if the endpoint has a place for them.
    fn tool_call(&self, _delta: &ToolCallDelta) -> Option<String> {
        None
    }
    /// A chunk carrying more of a refusal, if the endpoint has a place for it.
    fn refusal(&self, _text: &str) -> Option<String> {
        None
    }
}

/// Streams a generation as server-sent events ending in `data: [DONE]`.
///
/// The response body reads the engine's events itself (no forwarding task, one wake-up per
/// token). When the client goes away the server drops the body, which drops the generation's
/// receiver and so cancels it in the engine, queued or running.
pub fn stream(
    events: Events,
    format: impl ChunkFormat,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut pending = VecDeque::new();
    if let Some(opening) = format.opening() {
        pending.push_back(opening);
    }
    Sse::new(EventStream {
        events,
        format,
        include_usage,
        pending,
        ended: false,
        span: tracing::Span::current(),
        logprobs: Vec::new(),
    })
}

/// The body of a streamed generation: chunks already due, then the engine's events as they come.
struct EventStream<F> {
    events: Events,
    format: F,
    include_usage: bool,
    /// Chunks to send before reading the engine again.
    pending: VecDeque<String>,
    /// The generation is over: send what is pending, then end.
    ended: bool,
    span: tracing::Span,
    /// Log probabilities not yet sent: they go with the next text.
    logprobs: Vec<TokenLogprob>,
}

impl<F: ChunkFormat> EventStream<F> {
    fn end_with(&mut self, chunks: impl IntoIterator<Item = String>) {
        self.pending.extend(chunks);
        self.ended = true;
    }

    /// The finish chunk (after one with log probabilities no text took); the usage chunk and
    /// `[DONE]` queued after it.
    fn finished(&mut self, reason: FinishReason, usage: Usage) -> String {
        let finish = self.format.finish(reason, &usage);
        let usage = self
            .include_usage
            .then(|| self.format.usage(wire_usage(usage)));
        if self.logprobs.is_empty() {
            self.end_with(usage.into_iter().chain(["[DONE]".to_string()]));
            return finish;
        }
        let logprobs = self.format.text("", &std::mem::take(&mut self.logprobs));
        self.end_with(
            [finish]
                .into_iter()
                .chain(usage)
                .chain(["[DONE]".to_string()]),
        );
        logprobs
    }
}

impl<F: ChunkFormat + Unpin> Stream for EventStream<F> {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(data) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(Event::default().data(data))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let data = loop {
            match ready!(Pin::new(&mut this.events).poll_next(cx)) {
                Some(GenerationEvent::Logprobs(more)) => this.logprobs.extend(more),
                Some(GenerationEvent::ToolCall(delta)) => {
                    if let Some(chunk) = this.format.tool_call(&delta) {
                        break chunk;
                    }
                }
                Some(GenerationEvent::Refusal(text)) => {
                    if let Some(chunk) = this.format.refusal(&text) {
                        break chunk;
                    }
                }
                Some(GenerationEvent::Text(text)) => {
                    break this.format.text(&text, &std::mem::take(&mut this.logprobs));
                }
                Some(GenerationEvent::Finished { reason, usage }) => {
                    break this.finished(reason, usage);
                }
                Some(GenerationEvent::Failed(err)) => {
                    this.ended = true;
                    break ApiError::from(err).to_json();
                }
                None => {
                    this.span.in_scope(|| {
                        tracing::error!("the engine dropped a generation without finishing it")
                    });
                    this.ended = true;
                    break ApiError::internal(
                        "the engine dropped a generation without finishing it",
                    )
                    .to_json();
                }
            }
        };
        Poll::Ready(Some(Ok(Event::default().data(data))))
    }
}

impl<F> Drop for EventStream<F> {
    fn drop(&mut self) {
        if !self.ended {
            self.span
                .in_scope(|| tracing::debug!("client went away; cancelling the generation"));
        }
    }
}

/// Usage in wire form.
pub fn wire_usage(usage: Usage) -> WireUsage {
    WireUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh response id with `prefix`.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
