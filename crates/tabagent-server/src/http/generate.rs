//! Running a generation for a handler: submit off the async threads, then collect or stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use tabagent_core::{FinishReason, GenerationEvent, InferenceError, Usage};
use tabagent_llama::{GenerationHandle, LlamaEngine};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::wire::WireUsage;

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

/// The whole output of a non-streamed generation.
pub struct Collected {
    /// All text.
    pub text: String,
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// Waits for the end of a generation. Dropping the future cancels it.
pub async fn collect(mut handle: GenerationHandle) -> Result<Collected, ApiError> {
    let mut text = String::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            GenerationEvent::Text(piece) => text.push_str(&piece),
            GenerationEvent::Finished { reason, usage } => {
                return Ok(Collected {
                    text,
                    reason,
                    usage,
                })
            }
            GenerationEvent::Failed(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal(
        "the engine dropped a generation without finishing it",
    ))
}

/// How a stream's chunks are written for one endpoint.
pub trait ChunkFormat: Send + 'static {
    /// A chunk sent before any text (chat sends the role), if any.
    fn opening(&self) -> Option<String>;
    /// A chunk carrying new text.
    fn text(&self, text: &str) -> String;
    /// The chunk carrying the finish reason.
    fn finish(&self, reason: FinishReason) -> String;
    /// The usage chunk.
    fn usage(&self, usage: WireUsage) -> String;
}

/// Streams a generation as server-sent events ending in `data: [DONE]`. When the client goes
/// away the event channel closes, the forwarding task ends and drops the generation's receiver,
/// which cancels it in the engine.
pub fn stream(
    mut handle: GenerationHandle,
    format: impl ChunkFormat,
    include_usage: bool,
) -> Sse<ReceiverStream<Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let span = tracing::Span::current();
    tokio::spawn(async move {
        let send = |data: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Event::default().data(data))).await.is_ok() }
        };
        if let Some(opening) = format.opening() {
            if !send(opening).await {
                return;
            }
        }
        loop {
            // A queued generation sends nothing for a while; watch the client meanwhile too.
            let event = tokio::select! {
                event = handle.events.recv() => event,
                () = tx.closed() => {
                    span.in_scope(|| tracing::debug!("client went away while waiting; cancelling"));
                    return;
                }
            };
            let Some(event) = event else { break };
            match event {
                GenerationEvent::Text(text) => {
                    if !send(format.text(&text)).await {
                        span.in_scope(|| tracing::debug!("client went away; cancelling"));
                        return;
                    }
                }
                GenerationEvent::Finished { reason, usage } => {
                    let _ = send(format.finish(reason)).await
                        && (!include_usage || send(format.usage(wire_usage(usage))).await)
                        && send("[DONE]".to_string()).await;
                    return;
                }
                GenerationEvent::Failed(err) => {
                    let _ = send(ApiError::from(err).to_json()).await;
                    return;
                }
            }
        }
        let _ = send(
            ApiError::internal("the engine dropped a generation without finishing it").to_json(),
        )
        .await;
    });
    Sse::new(ReceiverStream::new(rx))
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
