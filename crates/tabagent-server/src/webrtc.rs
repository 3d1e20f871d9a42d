//! What a WebRTC session carries for this server: every data channel speaks the message
//! protocol (`messages`: API requests in, replies and streamed events out, as over native
//! messaging), served by the API's router in this process under the caller that opened the
//! session; video frames are counted by the session (and decoded, ready for the vision models).

use std::sync::Arc;

use tabagent_webrtc::{SessionHooks, VideoFrame};
use tokio::sync::mpsc;

use crate::callers::Caller;
use crate::messages::{self, Backend, Inbound, Limits};
use crate::state::AppState;

/// The largest reply message sent on a data channel: Chrome takes up to 256 KiB a message; a
/// smaller piece keeps one long reply from holding up the channel's other replies.
const MAX_REPLY_MESSAGE: usize = 64 * 1024;

pub struct ApiHooks {
    backend: Backend,
    limits: Limits,
}

impl ApiHooks {
    pub fn new(state: &AppState, caller: Caller) -> Arc<ApiHooks> {
        let config = state.config();
        Arc::new(ApiHooks {
            backend: Backend::InProcess {
                router: crate::http::router(state.clone()),
                caller,
            },
            limits: Limits {
                max_message_bytes: config.webrtc.max_message_bytes,
                max_reply_message_bytes: MAX_REPLY_MESSAGE,
                max_reply_body_bytes: 64 * 1024 * 1024,
                max_in_flight: config.native.max_in_flight,
            },
        })
    }
}

impl SessionHooks for ApiHooks {
    fn channel_opened(
        &self,
        label: &str,
        outbound: mpsc::Sender<Vec<u8>>,
    ) -> Option<mpsc::Sender<Vec<u8>>> {
        tracing::debug!(%label, "data channel opened");
        let (arrived, mut arrivals) = mpsc::channel::<Vec<u8>>(256);
        let (inbound_tx, inbound) = mpsc::channel::<Inbound>(16);
        let limit = self.limits.max_message_bytes;
        tokio::spawn(async move {
            while let Some(bytes) = arrivals.recv().await {
                let next = if bytes.len() > limit {
                    Inbound::TooLarge {
                        length: bytes.len() as u64,
                        limit,
                    }
                } else {
                    Inbound::parse(&bytes)
                };
                if inbound_tx.send(next).await.is_err() {
                    return;
                }
            }
            let _ = inbound_tx.send(Inbound::End).await;
        });
        tokio::spawn(messages::serve(
            self.backend.clone(),
            inbound,
            outbound,
            self.limits,
        ));
        Some(arrived)
    }

    fn frame(&self, frame: VideoFrame) {
        tracing::trace!(
            index = frame.index,
            width = frame.width,
            height = frame.height,
            "video frame"
        );
    }
}
