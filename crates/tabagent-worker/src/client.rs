//! The worker's client: each call waits for a running worker, and a call cut off because the
//! worker died is tried once more on the next one (every call is idempotent: the worker keeps
//! no state).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tonic::transport::Channel;

use crate::pb;
use crate::supervisor::{Running, Shared};
use crate::WorkerError;

/// The most a reply or request may carry (a frame, an audio file, a segmentation PNG).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of the supervised worker (cheap to clone).
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Whether the worker is serving now.
    pub fn is_running(&self) -> bool {
        self.shared.ready.borrow().is_some()
    }

    /// The serving worker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.shared.ready.borrow().as_ref().map(|r| r.pid)
    }

    /// How long the serving worker took to start, and how long the server was without a worker
    /// before it (from the previous one's death; `None` for the first).
    pub fn last_start(&self) -> Option<(std::time::Duration, Option<std::time::Duration>)> {
        self.shared
            .ready
            .borrow()
            .as_ref()
            .map(|r| (r.startup, r.downtime))
    }

    /// How many times the worker was started again after it stopped.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Calls sent to the worker and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Why the worker is not serving, if it is not.
    pub fn status(&self) -> Option<String> {
        if self.is_running() {
            None
        } else {
            Some(
                self.shared
                    .last_error()
                    .unwrap_or_else(|| "starting".into()),
            )
        }
    }

    /// The running worker, waiting (up to the configured wait) for one newer than `after`.
    async fn running(&self, after: u64) -> Result<Running, WorkerError> {
        let mut ready = self.shared.ready.subscribe();
        let wait = async {
            ready
                .wait_for(|r| r.as_ref().is_some_and(|r| r.generation > after))
                .await
                .ok()
                .and_then(|running| running.clone())
        };
        match tokio::time::timeout(self.shared.call_wait, wait).await {
            Ok(Some(running)) => Ok(running),
            _ => Err(WorkerError::Unavailable(
                self.shared
                    .last_error()
                    .unwrap_or_else(|| "it is not running".into()),
            )),
        }
    }

    /// Makes `call` on the running worker, once more on the next one if this one dies under it.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, WorkerError>
    where
        F: Fn(Running) -> Fut,
        Fut: Future<Output = Result<T, WorkerError>>,
    {
        let running = self.running(0).await?;
        let generation = running.generation;
        match call(running).await {
            Err(error) if error.is_retryable() => {
                tracing::warn!(error = %error, "the ML worker went away mid-call; trying once more");
                call(self.running(generation).await?).await
            }
            answered => answered,
        }
    }

    /// A unary gRPC call, made as [`Worker::call`] makes calls.
    async fn grpc<T, F, Fut>(&self, call: F) -> Result<T, WorkerError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|running| {
            let counted = InFlight::enter(&self.shared);
            let reply = call(running.channel);
            async move {
                let _counted = counted;
                reply
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| WorkerError::from_status(&s))
            }
        })
        .await
    }

    /// Runs a vision task on a frame, through the worker's vision lane.
    pub async fn analyze(
        &self,
        request: pb::VisionRequest,
    ) -> Result<pb::VisionReply, WorkerError> {
        let request = &request;
        self.call(|running| async move {
            let counted = InFlight::enter(&self.shared);
            running.lane.analyze(request, counted).await
        })
        .await
    }

    /// Runs vision tasks on a stream of frames: one reply per frame, in order. Not tried again
    /// if the worker dies mid-stream (frames already answered would be answered twice): the
    /// stream ends with [`WorkerError::Unavailable`] and the caller starts a new one.
    pub async fn analyze_stream<S>(
        &self,
        frames: S,
    ) -> Result<impl tokio_stream::Stream<Item = Result<pb::VisionReply, WorkerError>>, WorkerError>
    where
        S: tokio_stream::Stream<Item = pb::VisionRequest> + Send + 'static,
    {
        use tokio_stream::StreamExt as _;
        let running = self.running(0).await?;
        let replies = vision(running.channel)
            .analyze_stream(frames)
            .await
            .map_err(|s| WorkerError::from_status(&s))?
            .into_inner();
        Ok(replies.map(|reply| reply.map_err(|s| WorkerError::from_status(&s))))
    }

    /// Transcribes an audio file.
    pub async fn transcribe(
        &self,
        request: pb::TranscribeRequest,
    ) -> Result<pb::TranscribeReply, WorkerError> {
        self.grpc(|channel| {
            let request = request.clone();
            async move {
                pb::speech_client::SpeechClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE)
                    .transcribe(request)
                    .await
            }
        })
        .await
    }

    /// Embeds texts with a sentence-transformers model.
    pub async fn embed(&self, request: pb::EmbedRequest) -> Result<pb::EmbedReply, WorkerError> {
        self.grpc(|channel| {
            let request = request.clone();
            async move {
                pb::transformers_client::TransformersClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .embed(request)
                    .await
            }
        })
        .await
    }

    /// Generates text with a Transformers language model, streamed. Like
    /// [`Worker::analyze_stream`], not tried again once started: text already sent would be
    /// sent twice.
    pub async fn generate(
        &self,
        request: pb::GenerateRequest,
    ) -> Result<
        impl tokio_stream::Stream<Item = Result<pb::GenerateChunk, WorkerError>> + Send + 'static,
        WorkerError,
    > {
        use tokio_stream::StreamExt as _;
        let running = self.running(0).await?;
        let chunks = pb::transformers_client::TransformersClient::new(running.channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .generate(request)
            .await
            .map_err(|s| WorkerError::from_status(&s))?
            .into_inner();
        Ok(chunks.map(|chunk| chunk.map_err(|s| WorkerError::from_status(&s))))
    }

    /// Loads a model (a no-op when it is loaded): what it holds.
    pub async fn load(&self, request: pb::LoadRequest) -> Result<pb::LoadedModel, WorkerError> {
        self.grpc(|channel| {
            let request = request.clone();
            async move {
                pb::models_client::ModelsClient::new(channel)
                    .load(request)
                    .await
            }
        })
        .await
    }

    /// Unloads a model: whether it was loaded.
    pub async fn unload(&self, model_id: &str) -> Result<bool, WorkerError> {
        let request = pb::UnloadRequest {
            model_id: model_id.to_string(),
        };
        let reply = self
            .grpc(|channel| {
                let request = request.clone();
                async move {
                    pb::models_client::ModelsClient::new(channel)
                        .unload(request)
                        .await
                }
            })
            .await?;
        Ok(reply.unloaded)
    }

    /// The models the worker holds.
    pub async fn models(&self) -> Result<Vec<pb::LoadedModel>, WorkerError> {
        let reply = self
            .grpc(|channel| async move {
                pb::models_client::ModelsClient::new(channel)
                    .list(pb::ListRequest {})
                    .await
            })
            .await?;
        Ok(reply.models)
    }
}

fn vision(channel: Channel) -> pb::vision_client::VisionClient<Channel> {
    pb::vision_client::VisionClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Counts a call in flight while it lives (a frame whose caller went away, until the worker
/// has answered it).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
