//! A generation's events as the service hands them to a transport: from the in-process
//! engine's channel or any stream (a routed provider's, a cached answer), holding the
//! scheduler's permits while it runs, failing at the request's deadline, watched for metrics and
//! budgets, and running the service's finishing work (recording, caching, sessions) before the
//! last event goes out.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::Stream;
use tabagent_core::{
    FinishReason, GenerationEvent, InferenceError, TokenLogprob, ToolCall, ToolCallAssembler, Usage,
};
use tabagent_llama::GenerationHandle;

use crate::error::ServiceError;
use crate::metrics::Watch;

/// What a finished generation said, for the work done once it ends.
pub struct Answer {
    /// All its text.
    pub text: String,
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// Work done once a generation finishes and before its `Finished` event is passed on; a failure
/// is passed on instead.
pub type Finish = Box<dyn FnOnce(Answer) -> Finishing + Send>;

/// Finishing work under way.
pub type Finishing = BoxFuture<'static, Result<(), ServiceError>>;

/// A generation's events, ending in one `Finished` or `Failed`. Dropping it cancels the
/// generation (queued or running) and releases its permits.
pub struct Events {
    source: Source,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _permits: tabagent_router::Permits,
    watch: Option<Watch>,
    finish: Option<Finish>,
    /// The text so far, kept only while there is finishing work.
    text: String,
    /// The finishing work under way, and how the generation ended.
    finishing: Option<(Finishing, FinishReason, Usage)>,
    ended: bool,
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
            watch: None,
            finish: None,
            text: String::new(),
            finishing: None,
            ended: false,
        }
    }

    /// Events read from `stream`.
    pub fn stream(stream: tabagent_router::EventStream) -> Events {
        Events::new(Source::Stream(stream))
    }

    /// `events`, in order, as a finished generation.
    pub fn of(events: Vec<GenerationEvent>) -> Events {
        Events::stream(Box::pin(futures_util::stream::iter(events)))
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

    /// Reports the generation's first token, speed and tokens to `watch`.
    pub fn watched(mut self, watch: Watch) -> Events {
        self.watch = Some(watch);
        self
    }

    /// Runs `finish` once the generation ends, before its `Finished` event.
    pub fn then(mut self, finish: Finish) -> Events {
        self.finish = Some(finish);
        self
    }

    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<GenerationEvent>> {
        let polled = match &mut self.source {
            Source::Engine(handle) => handle.events.poll_recv(cx),
            Source::Stream(stream) => stream.as_mut().poll_next(cx),
        };
        if polled.is_pending() {
            if let Some(deadline) = self.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
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

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Events {
    type Item = GenerationEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some((work, reason, usage)) = this.finishing.as_mut() {
            let done = std::task::ready!(work.as_mut().poll(cx));
            let (reason, usage) = (*reason, *usage);
            this.finishing = None;
            this.ended = true;
            return Poll::Ready(Some(match done {
                Ok(()) => GenerationEvent::Finished { reason, usage },
                Err(err) => GenerationEvent::Failed(err.into_inference()),
            }));
        }
        let event = match std::task::ready!(this.poll_source(cx)) {
            Some(event) => event,
            None => {
                this.ended = true;
                return Poll::Ready(None);
            }
        };
        match &event {
            GenerationEvent::Text(text) => {
                if this.finish.is_some() {
                    this.text.push_str(text);
                }
                if let Some(watch) = &mut this.watch {
                    watch.text();
                }
            }
            GenerationEvent::ToolCall(_) | GenerationEvent::Refusal(_) => {
                if let Some(watch) = &mut this.watch {
                    watch.text();
                }
            }
            GenerationEvent::Logprobs(_) => {}
            GenerationEvent::Finished { reason, usage } => {
                if let Some(watch) = &mut this.watch {
                    watch.finished(*usage);
                }
                if let Some(finish) = this.finish.take() {
                    let answer = Answer {
                        text: std::mem::take(&mut this.text),
                        reason: *reason,
                        usage: *usage,
                    };
                    this.finishing = Some((finish(answer), *reason, *usage));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                this.ended = true;
            }
            GenerationEvent::Failed(_) => this.ended = true,
        }
        Poll::Ready(Some(event))
    }
}

/// The whole output of a generation.
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
pub async fn collect(mut events: Events) -> Result<Collected, ServiceError> {
    let mut text = String::new();
    let mut tool_calls = ToolCallAssembler::default();
    let mut logprobs: Option<Vec<TokenLogprob>> = None;
    let mut refusal: Option<String> = None;
    while let Some(event) = events.next().await {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::ToolCall(delta) => tool_calls.push(&delta),
            GenerationEvent::Logprobs(more) => {
                logprobs.get_or_insert_with(Vec::new).extend(more);
            }
            GenerationEvent::Refusal(more) => {
                refusal.get_or_insert_with(String::new).push_str(&more);
            }
            GenerationEvent::Finished { reason, usage } => {
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
    Err(ServiceError::internal(
        "the engine dropped a generation without finishing it",
    ))
}
