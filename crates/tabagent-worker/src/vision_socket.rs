//! The vision lane's client: single frames to the worker on a plain Unix socket beside its gRPC
//! one (`vision.sock`), each message after a 4-byte little-endian length. Python's gRPC server
//! costs about 0.5 ms a call, which is a camera frame's whole budget for the hop; this costs
//! about a tenth of that. `python/tabagent_worker/lane.py` is the other end.
//!
//! One request at a time on a connection; idle connections are kept for the next call. An
//! exchange holds one of `calls` permits, and a caller that goes away does not cut it short: the
//! rest of it runs in a task of its own, so the worker's answer is still read (the connection
//! stays in step and is kept) and the permit is held until then. The worker never has more than
//! `calls` frames from tabagent at once.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::client::MAX_MESSAGE;
use crate::{pb, WorkerError};

/// The connections to one worker's lane (a new worker gets a new `VisionSocket`).
#[derive(Clone)]
pub(crate) struct VisionSocket(Arc<Inner>);

struct Inner {
    socket: PathBuf,
    idle: Mutex<Vec<UnixStream>>,
    /// Requests sent at once: as many as the worker serves at once.
    calls: Arc<Semaphore>,
}

impl VisionSocket {
    pub fn new(socket: PathBuf, calls: usize) -> Self {
        Self(Arc::new(Inner {
            socket,
            idle: Mutex::new(Vec::new()),
            calls: Arc::new(Semaphore::new(calls.max(1))),
        }))
    }

    /// What `Vision.Analyze` would answer. `held` is dropped once the worker's answer is read,
    /// even if the caller went away before.
    pub async fn analyze(
        &self,
        request: &pb::VisionRequest,
        held: impl Send + 'static,
    ) -> Result<pb::VisionReply, WorkerError> {
        let length = request.encoded_len();
        if length > MAX_MESSAGE {
            return Err(WorkerError::InvalidInput(format!(
                "the request is {length} bytes; at most {MAX_MESSAGE} are taken"
            )));
        }
        let mut message = Vec::with_capacity(4 + length);
        message.extend_from_slice(&(length as u32).to_le_bytes());
        request
            .encode(&mut message)
            .map_err(|e| WorkerError::Failed(e.to_string()))?;

        let permit = Arc::clone(&self.0.calls)
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Unavailable("it is stopping".into()))?;
        let lane = self.clone();
        let answer = FinishedAnyway::new(async move {
            let answer = lane.exchange(&message).await;
            drop((permit, held));
            answer
        })
        .run()
        .await?;

        let answer = pb::LaneReply::decode(answer.as_slice())
            .map_err(|e| WorkerError::Failed(format!("a malformed answer: {e}")))?;
        match answer.outcome {
            Some(pb::lane_reply::Outcome::Reply(reply)) => Ok(reply),
            Some(pb::lane_reply::Outcome::Error(error)) => Err(WorkerError::from_status(
                &tonic::Status::new(tonic::Code::from_i32(error.code), error.message),
            )),
            None => Err(WorkerError::Failed("an empty answer".into())),
        }
    }

    /// Sends `message` on an idle connection, or a new one, and reads the answer's bytes. A
    /// kept connection that fails is replaced by a new one once (the call is idempotent): it
    /// may have been closed while idle. A new one that fails means the worker is going.
    async fn exchange(&self, message: &[u8]) -> Result<Vec<u8>, WorkerError> {
        let idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut connection) = idle {
            match self.exchange_on(&mut connection, message).await {
                Ok(answer) => {
                    self.keep(connection);
                    return Ok(answer);
                }
                Err(WorkerError::Unavailable(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let mut connection = UnixStream::connect(&self.0.socket).await.map_err(broken)?;
        let answer = self.exchange_on(&mut connection, message).await?;
        self.keep(connection);
        Ok(answer)
    }

    async fn exchange_on(
        &self,
        connection: &mut UnixStream,
        message: &[u8],
    ) -> Result<Vec<u8>, WorkerError> {
        connection.write_all(message).await.map_err(broken)?;
        let mut header = [0u8; 4];
        connection.read_exact(&mut header).await.map_err(broken)?;
        let length = u32::from_le_bytes(header) as usize;
        if length > MAX_MESSAGE {
            return Err(WorkerError::Failed(format!(
                "an answer of {length} bytes is over the limit"
            )));
        }
        let mut answer = vec![0u8; length];
        connection.read_exact(&mut answer).await.map_err(broken)?;
        Ok(answer)
    }

    fn keep(&self, connection: UnixStream) {
        self.0
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(connection);
    }
}

/// A future run in place that, dropped before it ends, is finished in a task of its own (boxed,
/// so it can move there half done). Spawning every exchange instead cost 0.06 ms a frame.
struct FinishedAnyway<T: Send + 'static>(Option<Pin<Box<dyn Future<Output = T> + Send>>>);

impl<T: Send + 'static> FinishedAnyway<T> {
    fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self(Some(Box::pin(future)))
    }

    async fn run(mut self) -> T {
        let Some(future) = self.0.as_mut() else {
            unreachable!("run takes self, so it runs once")
        };
        let output = future.await;
        self.0 = None;
        output
    }
}

impl<T: Send + 'static> Drop for FinishedAnyway<T> {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take() {
            // Outside a runtime (it is shutting down) the rest is dropped: the connection closes.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = rest.await;
                });
            }
        }
    }
}

/// The connection went away: the worker died (or is dying) under the call.
fn broken(error: std::io::Error) -> WorkerError {
    WorkerError::Unavailable(format!("the connection to it broke: {error}"))
}
