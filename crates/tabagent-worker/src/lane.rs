//! The vision lane's client: single frames to the worker on a plain Unix socket beside its gRPC
//! one (`vision.sock`), each message after a 4-byte little-endian length. Python's gRPC server
//! costs about 0.6 ms a call, which is a camera frame's whole budget for the hop; this costs
//! about a tenth of that. `python/tabagent_worker/lane.py` is the other end.
//!
//! One request at a time on a connection; idle connections are kept for the next call. A call
//! whose caller goes away drops its connection (the worker's answer would arrive on it later).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

use crate::{pb, WorkerError};

/// The connections to one worker's lane (a new worker gets a new `Lane`).
#[derive(Clone)]
pub(crate) struct Lane(Arc<Inner>);

struct Inner {
    socket: PathBuf,
    idle: Mutex<Vec<UnixStream>>,
    /// Requests sent at once: as many as the worker serves at once.
    calls: Semaphore,
    max_message: usize,
}

impl Lane {
    pub fn new(socket: PathBuf, calls: usize, max_message: usize) -> Self {
        Self(Arc::new(Inner {
            socket,
            idle: Mutex::new(Vec::new()),
            calls: Semaphore::new(calls.max(1)),
            max_message,
        }))
    }

    /// What `Vision.Analyze` would answer.
    pub async fn analyze(
        &self,
        request: &pb::VisionRequest,
    ) -> Result<pb::VisionReply, WorkerError> {
        let length = request.encoded_len();
        if length > self.0.max_message {
            return Err(WorkerError::InvalidInput(format!(
                "the request is {length} bytes; at most {} are taken",
                self.0.max_message
            )));
        }
        let mut message = Vec::with_capacity(4 + length);
        message.extend_from_slice(&(length as u32).to_le_bytes());
        request.encode_raw(&mut message);

        let _permit = self
            .0
            .calls
            .acquire()
            .await
            .map_err(|_| WorkerError::Unavailable("it is stopping".into()))?;
        let idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => UnixStream::connect(&self.0.socket).await.map_err(broken)?,
        };
        let answer = self.exchange(&mut connection, &message).await?;
        self.0
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(connection);

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

    /// Sends `message` and reads the answer's bytes.
    async fn exchange(
        &self,
        connection: &mut UnixStream,
        message: &[u8],
    ) -> Result<Vec<u8>, WorkerError> {
        connection.write_all(message).await.map_err(broken)?;
        let mut header = [0u8; 4];
        connection.read_exact(&mut header).await.map_err(broken)?;
        let length = u32::from_le_bytes(header) as usize;
        if length > self.0.max_message {
            return Err(WorkerError::Failed(format!(
                "an answer of {length} bytes is over the limit"
            )));
        }
        let mut answer = vec![0u8; length];
        connection.read_exact(&mut answer).await.map_err(broken)?;
        Ok(answer)
    }
}

/// The connection went away: the worker died (or is dying) under the call.
fn broken(error: std::io::Error) -> WorkerError {
    WorkerError::Unavailable(format!("the connection to it broke: {error}"))
}
