//! WebRTC signaling: `POST /v1/webrtc/offer` answers a browser's SDP offer and starts a session
//! (its data channels then carry API requests, its video track is decoded); trickled ICE
//! candidates, listing and closing. A session belongs to the caller (API key) that opened it:
//! another key neither sees nor closes it. `GET /webrtc` is a page that uses all of it.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tabagent_webrtc::{Sessions, WebRtcError};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::callers::Caller;
use crate::state::AppState;

/// `POST /v1/webrtc/offer`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OfferRequest {
    /// The offer's SDP (`RTCSessionDescription.sdp`).
    pub sdp: String,
    /// `"offer"` (the only kind answered).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Run a vision task on the video the browser sends; results go to its data channel
    /// labelled `vision`.
    #[serde(default)]
    pub vision: Option<VideoVisionRequest>,
}

/// A vision task on a session's video.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoVisionRequest {
    /// `face`, `face-mesh`, `hands`, `pose` or `holistic`.
    pub task: String,
    /// Analyse every N-th frame (default 1: each frame the worker keeps up with).
    #[serde(default)]
    pub every: Option<u64>,
    /// The MediaPipe model (default `worker.vision_model`).
    #[serde(default)]
    pub model: Option<String>,
    /// 0 to 1 (default 0.5).
    #[serde(default)]
    pub min_confidence: Option<f32>,
}

fn video_vision(
    state: &AppState,
    request: Option<VideoVisionRequest>,
) -> Result<Option<crate::webrtc::VideoVision>, ApiError> {
    let Some(request) = request else {
        return Ok(None);
    };
    let task = super::vision::task_of(&request.task)
        .filter(|task| *task != tabagent_worker::pb::VisionTask::Segmentation)
        .ok_or_else(|| {
            ApiError::bad_request(
                Some("vision.task"),
                "vision.task must be face, face-mesh, hands, pose or holistic",
            )
        })?;
    let every = request.every.unwrap_or(1);
    if !(1..=1000).contains(&every) {
        return Err(ApiError::bad_request(
            Some("vision.every"),
            "vision.every must be between 1 and 1000",
        ));
    }
    let min_confidence = request.min_confidence.unwrap_or(0.5);
    if !(min_confidence > 0.0 && min_confidence <= 1.0) {
        return Err(ApiError::bad_request(
            Some("vision.min_confidence"),
            "vision.min_confidence must be above 0 and at most 1",
        ));
    }
    Ok(Some(crate::webrtc::VideoVision {
        name: request.task,
        task,
        every,
        model: request
            .model
            .unwrap_or_else(|| state.config().worker.vision_model.clone()),
        min_confidence,
    }))
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfferReply {
    /// The session, for the other endpoints.
    pub session_id: String,
    /// `"answer"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The answer's SDP, for `setRemoteDescription`.
    pub sdp: String,
}

/// `POST /v1/webrtc/sessions/{id}/candidates`: an `RTCIceCandidate` as the browser gives it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CandidateRequest {
    /// `candidate:…`; empty marks the end of candidates.
    pub candidate: String,
}

fn sessions(state: &AppState) -> Result<&std::sync::Arc<Sessions>, ApiError> {
    state.webrtc().ok_or_else(|| {
        ApiError::unavailable(
            "webrtc_off",
            "this server does not offer WebRTC (started with --mode http or native)",
        )
    })
}

fn owner(caller: Option<&Extension<Caller>>) -> String {
    caller.map_or_else(
        || tabagent_router::ANONYMOUS.to_string(),
        |c| c.0 .0.to_string(),
    )
}

fn failed(err: WebRtcError) -> ApiError {
    match err {
        WebRtcError::BadOffer(_)
        | WebRtcError::OfferTooLarge { .. }
        | WebRtcError::Unanswerable(_) => ApiError::bad_request(Some("sdp"), err.to_string()),
        WebRtcError::BadCandidate(_) => ApiError::bad_request(Some("candidate"), err.to_string()),
        WebRtcError::TooManySessions(_) => {
            ApiError::unavailable("webrtc_sessions_full", err.to_string())
        }
        WebRtcError::TooManySessionsForCaller(_) => {
            ApiError::too_many_requests("webrtc_sessions_per_caller", err.to_string())
        }
        WebRtcError::NoSuchSession(_) => {
            ApiError::not_found("session_not_found", "id", err.to_string())
        }
        WebRtcError::Socket { .. } => ApiError::internal(err),
    }
}

/// The session `id`, if it exists and belongs to this caller.
fn owned(
    sessions: &Sessions,
    id: &str,
    owner: &str,
) -> Result<tabagent_webrtc::SessionInfo, ApiError> {
    sessions
        .get(id)
        .filter(|info| info.owner == owner)
        .ok_or_else(|| failed(WebRtcError::NoSuchSession(id.to_string())))
}

/// Answers an SDP offer and starts the session.
#[utoipa::path(
    post,
    path = "/v1/webrtc/offer",
    tag = "webrtc",
    request_body = OfferRequest,
    responses(
        (status = 200, body = OfferReply),
        (status = 400, description = "Not an offer, or nothing in it this server can answer", body = ErrorBody),
        (status = 503, description = "WebRTC is off, or every session slot is taken", body = ErrorBody),
    )
)]
pub async fn offer(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(request): ApiJson<OfferRequest>,
) -> Result<Json<OfferReply>, ApiError> {
    let sessions = sessions(&state)?;
    if request.kind.as_deref().is_some_and(|kind| kind != "offer") {
        return Err(ApiError::bad_request(
            Some("type"),
            "only an offer (`type: \"offer\"`) is answered",
        ));
    }
    let caller_value = caller
        .as_ref()
        .map_or_else(Caller::anonymous, |c| c.0.clone());
    let vision = video_vision(&state, request.vision)?;
    let hooks = crate::webrtc::ApiHooks::new(&state, caller_value, vision);
    let opened = sessions
        .open(&request.sdp, &owner(caller.as_ref()), hooks)
        .await
        .map_err(failed)?;
    Ok(Json(OfferReply {
        session_id: opened.id,
        kind: "answer",
        sdp: opened.answer,
    }))
}

/// Adds an ICE candidate the browser trickled.
#[utoipa::path(
    post,
    path = "/v1/webrtc/sessions/{id}/candidates",
    tag = "webrtc",
    params(("id" = String, Path, description = "The session")),
    request_body = CandidateRequest,
    responses(
        (status = 200, description = "`{added: true}`; false for the end-of-candidates mark and for an mDNS host name (`….local`), whose address the session learns from the browser's checks"),
        (status = 400, description = "Not a candidate", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub async fn candidate(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CandidateRequest>,
) -> Result<Json<Value>, ApiError> {
    let sessions = sessions(&state)?;
    owned(sessions, &id, &owner(caller.as_ref()))?;
    if request.candidate.trim().is_empty() {
        return Ok(Json(json!({"added": false})));
    }
    let added = sessions
        .add_candidate(&id, &request.candidate)
        .await
        .map_err(failed)?;
    Ok(Json(json!({"added": added})))
}

/// This caller's open sessions.
#[utoipa::path(
    get,
    path = "/v1/webrtc/sessions",
    tag = "webrtc",
    responses((status = 200, description = "`{data: [session]}`: id, state, addresses, channels, message counts, video frames"))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>, ApiError> {
    let sessions = sessions(&state)?;
    let owner = owner(caller.as_ref());
    let mine: Vec<_> = sessions
        .list()
        .into_iter()
        .filter(|s| s.owner == owner)
        .collect();
    Ok(Json(json!({"object": "list", "data": mine})))
}

/// One session.
#[utoipa::path(
    get,
    path = "/v1/webrtc/sessions/{id}",
    tag = "webrtc",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The session: state, addresses, channels, message counts, video frames"),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<tabagent_webrtc::SessionInfo>, ApiError> {
    let sessions = sessions(&state)?;
    Ok(Json(owned(sessions, &id, &owner(caller.as_ref()))?))
}

/// Ends a session.
#[utoipa::path(
    delete,
    path = "/v1/webrtc/sessions/{id}",
    tag = "webrtc",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "`{id, deleted: true}`"),
        (status = 404, description = "No such session", body = ErrorBody),
    )
)]
pub async fn close(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sessions = sessions(&state)?;
    owned(sessions, &id, &owner(caller.as_ref()))?;
    sessions.close(&id).await.map_err(failed)?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

/// `GET /webrtc`: a page that chats with a model over a data channel and sends the camera.
/// Its script is a file of its own, so the page's policy allows no inline script.
pub async fn page() -> impl IntoResponse {
    Html(include_str!("webrtc.html"))
}

/// `GET /webrtc.js`: the page's script.
pub async fn script() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("webrtc.js"),
    )
}
