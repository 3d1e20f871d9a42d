//! `POST /v1/audio/transcriptions`, OpenAI's shape: a multipart upload (`file`, `model`,
//! optional `language`, `prompt`, `temperature`, `response_format`), transcribed by
//! faster-whisper in the Python worker. `model` names a Whisper model the worker can load;
//! OpenAI's `whisper-1` (what its SDKs send by default) means `worker.speech_model`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tabagent_worker::pb;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::upload;
use crate::catalog::ModelKind;
use crate::state::AppState;

/// `json` (the default) answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transcription {
    /// Everything said.
    pub text: String,
}

/// A stretch of speech.
#[derive(Debug, Serialize, ToSchema)]
pub struct TranscriptionSegment {
    pub id: usize,
    /// Seconds from the start.
    pub start: f32,
    pub end: f32,
    pub text: String,
}

/// `verbose_json` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseTranscription {
    /// `transcribe`.
    pub task: &'static str,
    pub language: String,
    /// Seconds of audio.
    pub duration: f32,
    pub text: String,
    pub segments: Vec<TranscriptionSegment>,
}

/// Transcribes an audio file.
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "openai",
    request_body(content = String, description = "multipart: `file` (WAV, MP3, FLAC, OGG, WebM…), `model`, optional `language`, `prompt`, `temperature`, `response_format` (`json`, `text`, `verbose_json`)", content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript", body = Transcription),
        (status = 400, description = "No file, not audio, empty audio, a bad setting", body = ErrorBody),
        (status = 404, description = "No such Whisper model", body = ErrorBody),
        (status = 503, description = "The ML worker is not running (see the message)", body = ErrorBody),
    )
)]
pub async fn transcriptions(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let upload = upload::read(&headers, query.as_deref(), body, "file").await?;
    let model = match upload.fields.get("model").map(|m| m.trim()) {
        None | Some("") | Some("whisper-1") => state.config().worker.speech_model.clone(),
        Some(model) => model.to_string(),
    };
    let temperature: f32 = upload.get("temperature")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            Some("temperature"),
            "temperature must be between 0 and 1",
        ));
    }
    let format = upload
        .fields
        .get("response_format")
        .map_or("json", |f| f.trim());
    if !matches!(format, "json" | "text" | "verbose_json") {
        return Err(ApiError::bad_request(
            Some("response_format"),
            "response_format must be `json`, `text` or `verbose_json`",
        ));
    }
    let format = format.to_string();
    let acquired = state.registry().acquire(&model, None).await?;
    let speech = acquired.engine.worker(
        &acquired.id,
        ModelKind::Speech,
        "this endpoint needs a speech model (Whisper in CTranslate2 form)",
    )?;
    let reply = speech
        .worker
        .transcribe(pb::TranscribeRequest {
            model_id: speech.id.clone(),
            audio: upload.file,
            language: upload.fields.get("language").cloned().unwrap_or_default(),
            prompt: upload.fields.get("prompt").cloned().unwrap_or_default(),
            temperature,
        })
        .await?;
    Ok(match format.as_str() {
        "text" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reply.text,
        )
            .into_response(),
        "verbose_json" => Json(VerboseTranscription {
            task: "transcribe",
            language: reply.language,
            duration: reply.duration,
            text: reply.text,
            segments: reply
                .segments
                .into_iter()
                .enumerate()
                .map(|(id, s)| TranscriptionSegment {
                    id,
                    start: s.start,
                    end: s.end,
                    text: s.text,
                })
                .collect(),
        })
        .into_response(),
        _ => Json(Transcription { text: reply.text }).into_response(),
    })
}
