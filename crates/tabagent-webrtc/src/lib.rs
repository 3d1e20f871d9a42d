//! WebRTC for tabagent, on str0m (sans-IO; this crate owns the sockets and the clock).
//!
//! A browser sends an SDP offer over HTTP; [`Sessions::open`] answers it and runs the session in
//! a task of its own, on its own UDP socket: ICE, DTLS, SCTP data channels and RTP. What a
//! session carries is the caller's business, through [`SessionHooks`]: each data channel that
//! opens becomes a pair of message queues, and each H.264 video frame the browser sends is
//! decoded to RGB ([`VideoFrame`]) on a thread of the session's own. Knows nothing of HTTP or
//! of what the messages mean.

mod session;
mod sessions;
mod video;

use std::net::IpAddr;
use std::time::Duration;

pub use session::{SessionInfo, VideoStats};
pub use sessions::{Opened, Sessions};
pub use video::VideoFrame;

use tokio::sync::mpsc;

/// How sessions are made and ended.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address the sessions' UDP sockets bind to and announce as their ICE candidate.
    pub ip: IpAddr,
    /// A session that has not connected this long after its offer is closed.
    pub connect_timeout: Duration,
    /// A connected session with no data-channel message and no media this long is closed.
    pub idle_timeout: Duration,
    /// Sessions at once; offers beyond are refused.
    pub max_sessions: usize,
    /// Sessions one owner (an API key) may have at once; its offers beyond are refused, so one
    /// caller cannot take every session.
    pub max_sessions_per_owner: usize,
    /// The largest SDP offer accepted, in bytes.
    pub max_offer_bytes: usize,
    /// Messages queued from a data channel before the session stops reading it.
    pub inbound_queue: usize,
}

/// What a session's owner does with what arrives.
pub trait SessionHooks: Send + Sync + 'static {
    /// A data channel named `label` opened. Messages to send on it go to `outbound` (each one
    /// data-channel message, as text); the messages that arrive on it go to the returned
    /// queue, which is dropped when the channel closes. `None` leaves the channel unread.
    fn channel_opened(
        &self,
        label: &str,
        outbound: mpsc::Sender<Vec<u8>>,
    ) -> Option<mpsc::Sender<Vec<u8>>>;

    /// A video frame arrived and was decoded (on the session's decoder thread).
    fn frame(&self, frame: VideoFrame) {
        let _ = frame;
    }
}

/// What went wrong with a session request.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// The offer does not parse.
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("the offer is {size} bytes; at most {limit} are accepted")]
    /// The offer is longer than `max_offer_bytes`.
    OfferTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The offer parses but cannot be answered (no data channel or codec in common).
    #[error("the offer cannot be answered: {0}")]
    Unanswerable(String),
    /// A trickled candidate does not parse.
    #[error("the ICE candidate is not valid: {0}")]
    BadCandidate(String),
    /// `max_sessions` are open.
    #[error("{0} sessions are open, the most allowed (webrtc.max_sessions)")]
    TooManySessions(usize),
    /// The owner has `max_sessions_per_owner` open.
    #[error("this caller has {0} sessions open, the most one caller may (webrtc.max_sessions_per_caller)")]
    TooManySessionsForCaller(usize),
    /// No open session has this id.
    #[error("there is no session {0}")]
    NoSuchSession(String),
    /// The session's UDP socket could not be bound.
    #[error("cannot open a UDP socket on {ip}: {source}")]
    Socket {
        /// The address it was to bind to.
        ip: IpAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
}
