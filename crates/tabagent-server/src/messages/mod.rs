//! The message protocol browsers speak to tabagent over Chrome native messaging and over WebRTC
//! data channels: each message is an API request, served like an HTTP request (so every
//! endpoint, guard and error of the HTTP API applies), its replies sent back as messages.
//!
//! As a client sees it (README, "Browser extensions"):
//! - request: `{"id": "r1", "method": "POST", "path": "/v1/chat/completions", "body": {…}}`;
//!   `method` defaults to POST with a body and GET without; `headers` (an object) is optional;
//!   raw bytes go as `body_base64` with `content_type`.
//! - reply: `{"id", "status", "body"}` (JSON), `{"id", "status", "text"}` (other text) or
//!   `{"id", "status", "content_type", "body_base64"}` (anything else).
//! - streams (`"stream": true`): one `{"id", "status", "event": {…}}` per server-sent event,
//!   then `{"id", "status", "done": true}`.
//! - a message longer than the transport takes comes as pieces of its JSON text:
//!   `{"id", "part", "more"}` ([`pieces`]).
//! - `{"id": "r1", "cancel": true}` stops request `r1` (a generation stops at its next token);
//!   it is acknowledged with `{"id": "r1", "cancelled": true}`.
//! - errors have OpenAI's body: `{"id", "status": 400, "body": {"error": {…}}}`; a message that
//!   could not be read at all is answered with `"id": null`.

mod backend;
mod dispatch;
pub mod pieces;

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

pub use backend::{server_answers, Backend, TrustedTransport};
use dispatch::error_reply;

/// What a transport read: a message, or why there is none.
#[derive(Debug)]
pub enum Inbound {
    /// A whole message, parsed.
    Message(Value),
    /// A whole message that is not JSON: answered with an error, then reading goes on.
    NotJson(String),
    /// A message longer than the limit: its bytes were read and dropped, so the next message
    /// starts where it should.
    TooLarge { length: u64, limit: usize },
    /// The input ended inside a message (its length or its body): nothing more will come.
    Truncated { expected: u64, got: u64 },
    /// The input ended between messages: the browser closed the port.
    End,
}

impl Inbound {
    /// A whole message's bytes: JSON, or not.
    pub fn parse(bytes: &[u8]) -> Inbound {
        match serde_json::from_slice(bytes) {
            Ok(value) => Inbound::Message(value),
            Err(err) => Inbound::NotJson(err.to_string()),
        }
    }
}

/// The sizes a client controls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest message read; longer ones are dropped with an error.
    pub max_message_bytes: usize,
    /// The longest message written; longer replies go in pieces.
    pub max_reply_message_bytes: usize,
    /// The largest non-streamed reply body relayed.
    pub max_reply_body_bytes: usize,
    /// Requests served at once; more are refused until one ends.
    pub max_in_flight: usize,
}

/// Serves what arrives on `inbound` (each request in its own task) until it ends, then waits
/// for the requests still running; sends replies, each at most `max_reply_message_bytes`, to
/// `outbound`. Returns early, cancelling what runs, when `outbound` closes (the client left).
pub async fn serve(
    backend: Backend,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Vec<u8>>,
    limits: Limits,
) {
    let (replies, mut outbox) = mpsc::channel::<Value>(256);
    // One writer, so the pieces of a long reply are never interleaved with other messages.
    let mut writer = tokio::spawn(async move {
        while let Some(reply) = outbox.recv().await {
            for message in pieces::split(&reply, limits.max_reply_message_bytes) {
                if outbound.send(message).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut running: JoinSet<String> = JoinSet::new();
    let mut handles: HashMap<String, AbortHandle> = HashMap::new();
    let mut reading = true;
    loop {
        tokio::select! {
            next = inbound.recv(), if reading => {
                let reply = match next {
                    Some(Inbound::Message(message)) => {
                        dispatch::accept(message, &backend, &replies, &mut running, &mut handles, limits).await;
                        None
                    }
                    Some(Inbound::NotJson(err)) => Some(error_reply(Value::Null, 400, "invalid_json",
                        &format!("the message is not JSON: {err}"))),
                    Some(Inbound::TooLarge { length, limit }) => Some(error_reply(Value::Null, 413, "message_too_large",
                        &format!("the message is {length} bytes; at most {limit} are accepted"))),
                    Some(Inbound::Truncated { expected, got }) => {
                        reading = false;
                        Some(error_reply(Value::Null, 400, "truncated_message",
                            &format!("the input ended {got} bytes into a {expected}-byte part of a message")))
                    }
                    Some(Inbound::End) | None => {
                        reading = false;
                        None
                    }
                };
                if let Some(reply) = reply {
                    let _ = replies.send(reply).await;
                }
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                // A cancelled task's handle is gone already; a finished one's goes now, unless
                // its id has been reused by a newer request.
                if let Ok((task, key)) = done {
                    if handles.get(&key).is_some_and(|handle| handle.id() == task) {
                        handles.remove(&key);
                    }
                }
            }
            _ = &mut writer => {
                // The client closed its end: nobody is left to answer.
                running.abort_all();
                return;
            }
        }
        if !reading && running.is_empty() {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
}
