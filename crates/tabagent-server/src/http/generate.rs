//! Running a generation for a handler: submit off the async threads, then collect or stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::response::sse::{Event, Sse};
use futures_util::Stream;
use tabagent_core::{
    FinishReason, GenerationEvent, InferenceError, TokenLogprob, ToolCall, ToolCallAssembler,
    ToolCallDelta, Usage,
};
use tabagent_llama::{GenerationHandle, LlamaEngine};

use super::error::ApiError;
use super::wire::WireUsage;
pub use crate::metrics::Watch;

/// Submits work to `engine` on a blocking thread (templating and tokenization are CPU work),
/// keeping the request's span.
pub async fn submit<F>(engine: &Arc<LlamaEngine>, work: F) -> Result<GenerationHandle, ApiError>
where
    F: FnOnce(&LlamaEngine) -> Result<GenerationHandle, InferenceError> + Send + 'static,
{
    let engine = Arc::clone(engine);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| work(&engine)))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// A generation's events: from the in-process engine's channel, or a stream (a routed
/// provider's, read in the response's own poll, or a cached answer); with the scheduler's
/// permits it holds while it runs, and the request's deadline.
pub struct Events {
    source: Source,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _permits: tabagent_router::Permits,
    expired: bool,
}

enum Source {
    Engine(GenerationHandle),
    Stream(tabagent_router::EventStream),
}

impl From<GenerationHandle> for Events {
    fn from(handle: GenerationHandle) -> Self {
        Events::new(Source::Engine(handle))
    }
}

impl Events {
    fn new(source: Source) -> Events {
        Events {
            source,
            deadline: None,
            _permits: tabagent_router::Permits::default(),
            expired: false,
        }
    }

    /// Events read from `stream`.
    pub fn stream(stream: tabagent_router::EventStream) -> Events {
        Events::new(Source::Stream(stream))
    }

    /// Holds `permits` until the generation is dropped, and fails it (cancelling what runs)
    /// when `deadline` passes first.
    pub fn held(
        mut self,
        permits: tabagent_router::Permits,
        deadline: Option<std::time::Instant>,
    ) -> Events {
        self._permits = permits;
        self.deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        self
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<GenerationEvent>> {
        if self.expired {
            return Poll::Ready(None);
        }
        let polled = match &mut self.source {
            Source::Engine(handle) => handle.events.poll_recv(cx),
            Source::Stream(stream) => stream.as_mut().poll_next(cx),
        };
        if polled.is_pending() {
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    self.expired = true;
                    // Dropping the source cancels the generation now, not when the body goes.
                    self.source = Source::Stream(Box::pin(futures_util::stream::empty()));
                    return Poll::Ready(Some(GenerationEvent::Failed(
                        InferenceError::DeadlineExceeded("while it was answered".to_string()),
                    )));
                }
            }
        }
        polled
    }

    async fn next(&mut self) -> Option<GenerationEvent> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The whole output of a non-streamed generation.
pub struct Collected {
    /// All text.
    pub text: String,
    /// The tools it called.
    pub tool_calls: Vec<ToolCall>,
    /// Each token's log probability, when they were asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// A remote engine's refusal, when it refused.
    pub refusal: Option<String>,
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// Waits for the end of a generation. Dropping the future cancels it.
pub async fn collect(events: impl Into<Events>, mut watch: Watch) -> Result<Collected, ApiError> {
    let mut events = events.into();
    let mut text = String::new();
    let mut tool_calls = ToolCallAssembler::default();
    let mut logprobs: Option<Vec<TokenLogprob>> = None;
    let mut refusal: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            GenerationEvent::Text(piece) => {
                watch.text();
                text.push_str(&piece);
            }
            GenerationEvent::ToolCall(delta) => {
                watch.text();
                tool_calls.push(&delta);
            }
            GenerationEvent::Logprobs(more) => {
                logprobs.get_or_insert_with(Vec::new).extend(more);
            }
            GenerationEvent::Refusal(more) => {
                watch.text();
                refusal.get_or_insert_with(String::new).push_str(&more);
            }
            GenerationEvent::Finished { reason, usage } => {
                watch.finished(usage);
                return Ok(Collected {
                    text,
                    tool_calls: tool_calls.finish(),
                    logprobs,
                    refusal,
                    reason,
                    usage,
                });
            }
            GenerationEvent::Failed(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal(
        "the engine dropped a generation without finishing it",
    ))
}

/// How a stream's chunks are written for one endpoint.
pub trait ChunkFormat: Send + Unpin + 'static {
    /// A chunk sent before any text (chat sends the role), if any.
    fn opening(&self) -> Option<String>;
    /// A chunk carrying new text, with the log probabilities of the tokens since the last
    /// chunk (empty unless they were asked for).
    fn text(&self, text: &str, logprobs: &[TokenLogprob]) -> String;
    /// The chunk carrying the finish reason.
    fn finish(&self, reason: FinishReason) -> String;
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

/// Work a stream finishes before its last chunks go out (recording the exchange), given the
/// whole text: a failure is sent instead of `[DONE]`.
pub type OnFinish = Box<
    dyn FnOnce(String, FinishReason, Usage) -> tokio::task::JoinHandle<Result<(), ApiError>> + Send,
>;

/// `on_finish` under way.
type Finishing = tokio::task::JoinHandle<Result<(), ApiError>>;

/// Streams a generation as server-sent events ending in `data: [DONE]`.
///
/// The response body reads the engine's events itself (no forwarding task, one wake-up per
/// token). When the client goes away the server drops the body, which drops the generation's
/// receiver and so cancels it in the engine, queued or running.
pub fn stream(
    handle: impl Into<Events>,
    format: impl ChunkFormat,
    include_usage: bool,
    watch: Watch,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    stream_then(handle, format, include_usage, None, watch)
}

/// [`stream`], running `on_finish` once the generation ends and before `[DONE]`.
pub fn stream_then(
    handle: impl Into<Events>,
    format: impl ChunkFormat,
    include_usage: bool,
    on_finish: Option<OnFinish>,
    watch: Watch,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut pending = VecDeque::new();
    if let Some(opening) = format.opening() {
        pending.push_back(opening);
    }
    Sse::new(EventStream {
        events: handle.into(),
        format,
        include_usage,
        pending,
        ended: false,
        span: tracing::Span::current(),
        text: String::new(),
        logprobs: Vec::new(),
        on_finish,
        finishing: None,
        watch,
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
    /// All text so far, kept only for `on_finish`.
    text: String,
    /// Log probabilities not yet sent: they go with the next text.
    logprobs: Vec<TokenLogprob>,
    on_finish: Option<OnFinish>,
    /// `on_finish` running, and how the generation ended.
    finishing: Option<(Finishing, FinishReason, Usage)>,
    watch: Watch,
}

impl<F: ChunkFormat> EventStream<F> {
    fn end_with(&mut self, chunks: impl IntoIterator<Item = String>) {
        self.pending.extend(chunks);
        self.ended = true;
    }

    /// The finish chunk (after one with log probabilities no text took); the usage chunk and
    /// `[DONE]` queued after it.
    fn finished(&mut self, reason: FinishReason, usage: Usage) -> String {
        let usage = self
            .include_usage
            .then(|| self.format.usage(wire_usage(usage)));
        let finish = self.format.finish(reason);
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
        if let Some((work, reason, usage)) = this.finishing.as_mut() {
            let done = ready!(Pin::new(work).poll(cx));
            let (reason, usage) = (*reason, *usage);
            this.finishing = None;
            let data = match done {
                Ok(Ok(())) => this.finished(reason, usage),
                Ok(Err(err)) => {
                    this.ended = true;
                    err.to_json()
                }
                Err(join) => {
                    this.ended = true;
                    ApiError::internal(join).to_json()
                }
            };
            return Poll::Ready(Some(Ok(Event::default().data(data))));
        }
        let data = loop {
            match ready!(this.events.poll_next(cx)) {
                Some(GenerationEvent::Logprobs(more)) => this.logprobs.extend(more),
                Some(GenerationEvent::ToolCall(delta)) => {
                    this.watch.text();
                    if let Some(chunk) = this.format.tool_call(&delta) {
                        break chunk;
                    }
                }
                Some(GenerationEvent::Refusal(text)) => {
                    this.watch.text();
                    if let Some(chunk) = this.format.refusal(&text) {
                        break chunk;
                    }
                }
                Some(GenerationEvent::Text(text)) => {
                    this.watch.text();
                    if this.on_finish.is_some() {
                        this.text.push_str(&text);
                    }
                    break this.format.text(&text, &std::mem::take(&mut this.logprobs));
                }
                Some(GenerationEvent::Finished { reason, usage }) => {
                    this.watch.finished(usage);
                    if let Some(on_finish) = this.on_finish.take() {
                        let work = on_finish(std::mem::take(&mut this.text), reason, usage);
                        this.finishing = Some((work, reason, usage));
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
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
