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

        decode_answer(&answer)
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
        read_answer(connection).await
    }

    fn keep(&self, connection: UnixStream) {
        self.0
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(connection);
    }
}

/// One answer's bytes: a 4-byte little-endian length, then that many bytes. The buffer grows as
/// the bytes arrive, so a length that lies costs only what was really sent.
async fn read_answer(
    connection: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Vec<u8>, WorkerError> {
    let mut header = [0u8; 4];
    connection.read_exact(&mut header).await.map_err(broken)?;
    let length = u32::from_le_bytes(header) as usize;
    if length > MAX_MESSAGE {
        return Err(WorkerError::Failed(format!(
            "an answer of {length} bytes is over the limit"
        )));
    }
    let mut answer = Vec::with_capacity(length.min(64 * 1024));
    let read = connection
        .take(length as u64)
        .read_to_end(&mut answer)
        .await
        .map_err(broken)?;
    if read < length {
        return Err(broken(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(answer)
}

/// The reply or the error an answer holds.
fn decode_answer(answer: &[u8]) -> Result<pb::VisionReply, WorkerError> {
    let answer = pb::LaneReply::decode(answer)
        .map_err(|e| WorkerError::Failed(format!("a malformed answer: {e}")))?;
    match answer.outcome {
        Some(pb::lane_reply::Outcome::Reply(reply)) => Ok(reply),
        Some(pb::lane_reply::Outcome::Error(error)) => Err(WorkerError::from_status(
            &tonic::Status::new(tonic::Code::from_i32(error.code), error.message),
        )),
        None => Err(WorkerError::Failed("an empty answer".into())),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The lane's answers as the worker writes them (`tests/corpus/vision-lane/answers`: a face,
    /// two hands, a pose, an error, answers back to back), mutated: every input is read answer
    /// by answer to its end, each answer decoded to a reply or a typed error, never a panic.
    #[test]
    fn fuzzed_answers_are_read_to_their_end() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/corpus/vision-lane/answers");
        let seeds = tabagent_testhub::fuzz::corpus(&dir).unwrap();
        // The seeds are what they say: each holds at least one whole answer that decodes.
        for seed in &seeds {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut reader = seed.as_slice();
            let first = runtime.block_on(read_answer(&mut reader)).unwrap();
            let decoded = decode_answer(&first);
            assert!(
                !matches!(decoded, Err(WorkerError::Failed(_))),
                "{decoded:?}"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tabagent_testhub::fuzz::run(&seeds, 200_000, |input| {
            runtime.block_on(async {
                let mut reader = input;
                for _ in 0..=input.len() {
                    let before = reader.len();
                    match read_answer(&mut reader).await {
                        Ok(answer) => {
                            assert_eq!(before - reader.len(), 4 + answer.len());
                            let _ = decode_answer(&answer);
                        }
                        Err(WorkerError::Unavailable(_) | WorkerError::Failed(_)) => return,
                        Err(other) => panic!("reading gave {other:?}"),
                    }
                }
                panic!("reading did not end");
            });
        });
    }

    #[tokio::test]
    async fn an_answer_shorter_than_its_length_is_a_broken_connection() {
        let mut input: &[u8] = &[10, 0, 0, 0, 1, 2, 3];
        assert!(matches!(
            read_answer(&mut input).await,
            Err(WorkerError::Unavailable(_))
        ));
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_answer(&mut input).await,
            Err(WorkerError::Failed(_))
        ));
    }
}
