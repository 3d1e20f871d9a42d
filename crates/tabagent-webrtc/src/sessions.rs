//! The table of sessions: opening one from an offer, trickled candidates, closing, listing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::session::{unix_now, Control, Session, SessionInfo, Shared, Timeouts, VideoStats};
use crate::video::lock;
use crate::{SessionHooks, Settings, WebRtcError};

/// The answer to an offer.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The session's id.
    pub id: String,
    /// The SDP answer, for `setRemoteDescription`.
    pub answer: String,
}

struct Entry {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
}

/// Every open session.
pub struct Sessions {
    settings: Settings,
    table: Arc<Mutex<HashMap<String, Entry>>>,
}

static CRYPTO: Once = Once::new();

impl Sessions {
    /// No sessions yet; they will follow `settings`.
    pub fn new(settings: Settings) -> Sessions {
        // DTLS and SRTP through aws-lc-rs, the one crypto backend compiled in. Its first
        // certificate costs ~25 ms of one-time set-up (then 50 µs): paid here, not by an offer.
        CRYPTO.call_once(|| {
            let provider = str0m::crypto::from_feature_flags();
            let _ = provider.dtls_provider.generate_certificate();
            provider.install_process_default();
        });
        Sessions {
            settings,
            table: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What sessions follow.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Answers `offer` (SDP text) and starts the session; `hooks` get its channels and frames.
    pub async fn open(
        &self,
        offer: &str,
        owner: &str,
        hooks: Arc<dyn SessionHooks>,
    ) -> Result<Opened, WebRtcError> {
        if offer.len() > self.settings.max_offer_bytes {
            return Err(WebRtcError::OfferTooLarge {
                size: offer.len(),
                limit: self.settings.max_offer_bytes,
            });
        }
        let offer = SdpOffer::from_sdp_string(offer)
            .map_err(|err| WebRtcError::BadOffer(err.to_string()))?;
        let ip = self.settings.ip;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|source| WebRtcError::Socket { ip, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| WebRtcError::Socket { ip, source })?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        let candidate = Candidate::host(local, "udp")
            .map_err(|err| WebRtcError::Unanswerable(err.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|err| WebRtcError::Unanswerable(err.to_string()))?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            info: Mutex::new(SessionInfo {
                id: id.clone(),
                owner: owner.to_string(),
                state: "connecting",
                created: unix_now(),
                local_address: local.to_string(),
                remote_address: None,
                channels: Vec::new(),
                messages_received: 0,
                messages_sent: 0,
                video: VideoStats::default(),
                closed_because: None,
            }),
            video: Arc::new(Mutex::new(VideoStats::default())),
        });
        let (control, control_rx) = mpsc::channel(16);
        {
            let mut table = lock(&self.table);
            if table.len() >= self.settings.max_sessions {
                return Err(WebRtcError::TooManySessions(table.len()));
            }
            let owned = table
                .values()
                .filter(|entry| lock(&entry.shared.info).owner == owner)
                .count();
            if owned >= self.settings.max_sessions_per_owner {
                return Err(WebRtcError::TooManySessionsForCaller(owned));
            }
            table.insert(
                id.clone(),
                Entry {
                    shared: shared.clone(),
                    control,
                },
            );
        }
        let session = Session {
            rtc,
            socket,
            local,
            hooks,
            shared,
            control: control_rx,
            timeouts: Timeouts {
                connect: self.settings.connect_timeout,
                idle: self.settings.idle_timeout,
            },
        };
        let table = self.table.clone();
        let session_id = id.clone();
        tokio::spawn(async move {
            let reason = session.run().await;
            tracing::info!(session = %session_id, %reason, "WebRTC session ended");
            lock(&table).remove(&session_id);
        });
        tracing::info!(session = %id, address = %local, "WebRTC session opened");
        Ok(Opened {
            id,
            answer: answer.to_sdp_string(),
        })
    }

    /// Adds a candidate the browser trickled (`candidate:…` as `RTCIceCandidate.candidate`);
    /// says whether it was added. A host candidate named by an mDNS name (`….local`, which
    /// browsers give unless the page may use the camera) is not: the session learns that
    /// address from the browser's checks instead.
    pub async fn add_candidate(&self, id: &str, candidate: &str) -> Result<bool, WebRtcError> {
        let text = candidate.trim();
        let text = text.strip_prefix("a=").unwrap_or(text);
        let address = text.split_whitespace().nth(4);
        if address.is_some_and(|address| address.to_ascii_lowercase().ends_with(".local")) {
            self.control(id)?;
            return Ok(false);
        }
        let candidate = Candidate::from_sdp_string(text)
            .map_err(|err| WebRtcError::BadCandidate(err.to_string()))?;
        let control = self.control(id)?;
        control
            .send(Control::Candidate(candidate))
            .await
            .map(|()| true)
            .map_err(|_| WebRtcError::NoSuchSession(id.to_string()))
    }

    /// Ends a session.
    pub async fn close(&self, id: &str) -> Result<(), WebRtcError> {
        let control = self.control(id)?;
        // A session that is ending already has dropped its receiver: it is closed either way.
        let _ = control.send(Control::Close).await;
        Ok(())
    }

    /// One open session.
    pub fn get(&self, id: &str) -> Option<SessionInfo> {
        lock(&self.table)
            .get(id)
            .map(|entry| entry.shared.snapshot())
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = lock(&self.table)
            .values()
            .map(|e| e.shared.snapshot())
            .collect();
        sessions.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        sessions
    }

    fn control(&self, id: &str) -> Result<mpsc::Sender<Control>, WebRtcError> {
        lock(&self.table)
            .get(id)
            .map(|entry| entry.control.clone())
            .ok_or_else(|| WebRtcError::NoSuchSession(id.to_string()))
    }
}
