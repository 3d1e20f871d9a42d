//! What a WebRTC session carries for this server: every data channel speaks the message
//! protocol (`messages`: API requests in, replies and streamed events out, as over native
//! messaging), served by the API's router in this process under the caller that opened the
//! session. Video frames are decoded by the session; when the offer asked for a vision task,
//! every `every`-th frame (skipping frames while one is still being analysed) goes to the ML
//! worker as raw RGB, and what it finds is sent on the data channel labelled `vision`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tabagent_webrtc::{SessionHooks, VideoFrame};
use tabagent_worker::pb;
use tokio::sync::mpsc;

use crate::callers::Caller;
use crate::catalog::ModelKind;
use crate::messages::{self, Backend, Inbound, Limits};
use crate::state::AppState;

/// The largest reply message sent on a data channel: Chrome takes up to 256 KiB a message; a
/// smaller piece keeps one long reply from holding up the channel's other replies.
const MAX_REPLY_MESSAGE: usize = 64 * 1024;

/// The data channel vision results go to.
pub const VISION_CHANNEL: &str = "vision";

/// A vision task run on a session's video.
#[derive(Debug, Clone)]
pub struct VideoVision {
    /// The task's name, as in `/v1/vision/{task}`.
    pub name: String,
    pub task: pb::VisionTask,
    /// Analyse every this many frames.
    pub every: u64,
    /// The MediaPipe model.
    pub model: String,
    pub min_confidence: f32,
}

pub struct ApiHooks {
    backend: Backend,
    limits: Limits,
    state: AppState,
    runtime: tokio::runtime::Handle,
    vision: Option<VideoVision>,
    vision_out: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    analysing: Arc<AtomicBool>,
}

impl ApiHooks {
    pub fn new(state: &AppState, caller: Caller, vision: Option<VideoVision>) -> Arc<ApiHooks> {
        let config = state.config();
        Arc::new(ApiHooks {
            backend: Backend::InProcess {
                app: state.in_process_app(),
                caller,
            },
            limits: Limits {
                max_message_bytes: config.webrtc.max_message_bytes,
                max_reply_message_bytes: MAX_REPLY_MESSAGE,
                max_reply_body_bytes: 64 * 1024 * 1024,
                max_in_flight: config.native.max_in_flight,
            },
            state: state.clone(),
            runtime: tokio::runtime::Handle::current(),
            vision,
            vision_out: Mutex::new(None),
            analysing: Arc::new(AtomicBool::new(false)),
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
        if label == VISION_CHANNEL {
            *self
                .vision_out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outbound);
            return None;
        }
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
        let Some(vision) = &self.vision else {
            return;
        };
        let out = self
            .vision_out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(out) = out else {
            return;
        };
        if !frame.index.is_multiple_of(vision.every) || self.analysing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let state = self.state.clone();
        let vision = vision.clone();
        let analysing = self.analysing.clone();
        self.runtime.spawn(async move {
            let message = match analyse(&state, &vision, &frame).await {
                Ok(result) => json!({
                    "frame": frame.index, "width": frame.width, "height": frame.height,
                    "task": vision.name, "result": result,
                }),
                Err(err) => json!({"frame": frame.index, "error": err.body()}),
            };
            analysing.store(false, Ordering::Release);
            let _ = out.send(message.to_string().into_bytes()).await;
        });
    }
}

async fn analyse(
    state: &AppState,
    vision: &VideoVision,
    frame: &VideoFrame,
) -> Result<serde_json::Value, crate::http::error::ApiError> {
    let acquired = state.registry().acquire(&vision.model, None).await?;
    let worker_model = acquired.engine.worker(
        &acquired.id,
        ModelKind::Vision,
        "video vision needs a MediaPipe vision model (its .task and .tflite files)",
    )?;
    let request = pb::VisionRequest {
        task: vision.task as i32,
        image: Some(pb::Image {
            source: Some(pb::image::Source::Raw(pb::RawFrame {
                width: frame.width,
                height: frame.height,
                rgb: frame.rgb.clone().into(),
            })),
        }),
        model_id: worker_model.id.clone(),
        min_confidence: vision.min_confidence,
        max_results: 4,
        ..pb::VisionRequest::default()
    };
    let reply = worker_model.worker.analyze(request).await?;
    let response = crate::http::vision::respond(&vision.name, vision.task, reply);
    serde_json::to_value(response).map_err(crate::http::error::ApiError::internal)
}
