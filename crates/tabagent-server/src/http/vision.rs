//! `POST /v1/vision/{task}`: MediaPipe through the Python worker. `face`, `face-mesh` (478
//! points with irises, blendshapes, gaze), `hands` (21 points, handedness, gesture), `pose` (33
//! points, world points, joint angles), `holistic` (face mesh, hands and pose of one frame) and
//! `segmentation` (the person mask as a PNG, or with `effect=blur|replace` the frame with its
//! background blurred or replaced).
//!
//! The image comes as a multipart field `image`, as JSON `{"image": "<base64 or data: URL>"}`,
//! or as the body itself; settings as fields, JSON members or query parameters.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tabagent_worker::pb;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::upload;
use crate::catalog::ModelKind;
use crate::state::AppState;

/// A point, normalised to the image (x, y in 0..1; z relative depth).
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    x: f32,
    y: f32,
    z: f32,
    #[serde(skip_serializing_if = "is_zero")]
    visibility: f32,
    #[serde(skip_serializing_if = "is_zero")]
    presence: f32,
}

fn is_zero(value: &f32) -> bool {
    *value == 0.0
}

/// A box in pixels.
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelBox {
    x: i32,
    y: i32,
    width: i32,
    height: i32,
}

/// A detected face.
#[derive(Debug, Serialize, ToSchema)]
pub struct Face {
    #[serde(rename = "box")]
    bounds: PixelBox,
    score: f32,
    /// Right eye, left eye, nose tip, mouth, right ear, left ear.
    keypoints: Vec<Point>,
}

/// Where the irises look: -1 to 1 across and down, per eye.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gaze {
    left_x: f32,
    left_y: f32,
    right_x: f32,
    right_y: f32,
}

/// A face mesh.
#[derive(Debug, Serialize, ToSchema)]
pub struct FaceMesh {
    /// 478 points: 468 of the face, then 5 of each iris.
    landmarks: Vec<Point>,
    /// Expression scores by name (52).
    blendshapes: std::collections::BTreeMap<String, f32>,
    gaze: Option<Gaze>,
}

/// A hand.
#[derive(Debug, Serialize, ToSchema)]
pub struct Hand {
    /// 21 points.
    landmarks: Vec<Point>,
    handedness: String,
    handedness_score: f32,
    /// A recognised gesture (`Thumb_Up`, `Open_Palm`, …), absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    gesture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gesture_score: Option<f32>,
}

/// A body pose.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pose {
    /// 33 points.
    landmarks: Vec<Point>,
    /// The same in metres, centred on the hips.
    world_landmarks: Vec<Point>,
    /// Joint angles in degrees by joint (`left_elbow`, …).
    angles: std::collections::BTreeMap<String, f32>,
}

/// What a vision task found.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisionResponse {
    /// The task.
    task: String,
    /// The image's size in pixels.
    width: u32,
    height: u32,
    /// Milliseconds the worker spent on the frame.
    elapsed_ms: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<Vec<Face>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    face_meshes: Option<Vec<FaceMesh>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hands: Option<Vec<Hand>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    poses: Option<Vec<Pose>>,
    /// Segmentation with `format=json`: the share of the image that is the person, the mask
    /// (PNG, base64) and with an effect the processed image (PNG, base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    foreground_fraction: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mask_png: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_png: Option<String>,
}

pub(crate) fn task_of(name: &str) -> Option<pb::VisionTask> {
    Some(match name {
        "face" => pb::VisionTask::Face,
        "face-mesh" => pb::VisionTask::FaceMesh,
        "hands" => pb::VisionTask::Hands,
        "pose" => pb::VisionTask::Pose,
        "holistic" => pb::VisionTask::Holistic,
        "segmentation" => pb::VisionTask::Segmentation,
        _ => return None,
    })
}

/// The header carrying segmentation's foreground share with a PNG answer.
const FOREGROUND_HEADER: &str = "x-tabagent-foreground-fraction";

/// Runs a MediaPipe task on an image.
#[utoipa::path(
    post,
    path = "/v1/vision/{task}",
    tag = "vision",
    params(
        ("task" = String, Path, description = "`face`, `face-mesh`, `hands`, `pose`, `holistic` or `segmentation`"),
        ("model" = Option<String>, Query, description = "a MediaPipe model (default: worker.vision_model)"),
        ("min_confidence" = Option<f32>, Query, description = "0 to 1 (default 0.5)"),
        ("max_results" = Option<u32>, Query, description = "faces, hands or poses at most (default 4)"),
        ("effect" = Option<String>, Query, description = "segmentation: `blur` or `replace` the background"),
        ("background" = Option<String>, Query, description = "segmentation with `replace`: `#RRGGBB` (default black)"),
        ("blur" = Option<u32>, Query, description = "segmentation with `blur`: odd kernel size (default 31)"),
        ("format" = Option<String>, Query, description = "segmentation: `png` (default: the mask, or the processed image with an effect) or `json`"),
    ),
    request_body(content = String, description = "The image: multipart field `image`, JSON `{\"image\": base64}`, or the body (PNG, JPEG, WebP, BMP)", content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "What was found (segmentation: a PNG unless `format=json`)", body = VisionResponse),
        (status = 400, description = "Not an image, an unknown task, a bad setting", body = ErrorBody),
        (status = 404, description = "The MediaPipe model is missing", body = ErrorBody),
        (status = 503, description = "The ML worker is not running (see the message)", body = ErrorBody),
    )
)]
pub async fn analyze(
    State(state): State<AppState>,
    Path(task_name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let task = task_of(&task_name).ok_or_else(|| {
        ApiError::bad_request(
            Some("task"),
            format!("no vision task `{task_name}`: face, face-mesh, hands, pose, holistic or segmentation"),
        )
    })?;
    let upload = upload::read(&headers, query.as_deref(), body, "image").await?;
    let min_confidence: f32 = upload.get("min_confidence")?.unwrap_or(0.5);
    if !(min_confidence > 0.0 && min_confidence <= 1.0) {
        return Err(ApiError::bad_request(
            Some("min_confidence"),
            "min_confidence must be above 0 and at most 1",
        ));
    }
    let max_results: u32 = upload.get("max_results")?.unwrap_or(4);
    if !(1..=32).contains(&max_results) {
        return Err(ApiError::bad_request(
            Some("max_results"),
            "max_results must be between 1 and 32",
        ));
    }
    let effect = match upload
        .fields
        .get("effect")
        .map(|e| e.trim().to_ascii_lowercase())
    {
        None => pb::BackgroundEffect::None,
        Some(e) if e.is_empty() || e == "none" => pb::BackgroundEffect::None,
        Some(e) if e == "blur" => pb::BackgroundEffect::Blur,
        Some(e) if e == "replace" => pb::BackgroundEffect::Replace,
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("effect"),
                "effect must be `none`, `blur` or `replace`",
            ))
        }
    };
    let background = match upload.fields.get("background") {
        None => 0,
        Some(colour) => parse_colour(colour)?,
    };
    let blur: u32 = upload.get("blur")?.unwrap_or(0);
    if blur != 0 && (blur.is_multiple_of(2) || blur > 255) {
        return Err(ApiError::bad_request(
            Some("blur"),
            "blur must be an odd number up to 255",
        ));
    }
    let as_json = match upload.fields.get("format").map(String::as_str) {
        None | Some("png") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("format"),
                "format must be `png` or `json`",
            ))
        }
    };
    let model = match upload.fields.get("model").map(|m| m.trim()) {
        None | Some("") => state.config().worker.vision_model.clone(),
        Some(model) => model.to_string(),
    };
    let acquired = state.registry().acquire(&model, None).await?;
    let vision = acquired.engine.worker(
        &acquired.id,
        ModelKind::Vision,
        "this endpoint needs a MediaPipe vision model (its .task and .tflite files)",
    )?;
    let request = pb::VisionRequest {
        task: task as i32,
        image: Some(pb::Image {
            source: Some(frame_source(upload.file).await?),
        }),
        model_id: vision.id.clone(),
        min_confidence,
        max_results,
        effect: effect as i32,
        background_rgb: background,
        blur_kernel: blur,
    };
    let reply = vision.worker.analyze(request).await?;
    if task == pb::VisionTask::Segmentation && !as_json {
        let png = if effect == pb::BackgroundEffect::None {
            reply.mask_png
        } else {
            reply.image_png
        };
        let mut response = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("{:.4}", reply.foreground_fraction)) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(FOREGROUND_HEADER), value);
        }
        return Ok(response);
    }
    Ok(Json(respond(&task_name, task, reply)).into_response())
}

/// The upload as the worker gets it: a PNG decoded here (faster than in the worker), anything
/// else as it came; a PNG or JPEG too big is refused from its header (`images::decode`).
async fn frame_source(file: Bytes) -> Result<pb::image::Source, ApiError> {
    let encoded = file.clone();
    let decoded = tokio::task::spawn_blocking(move || crate::images::decode(&encoded))
        .await
        .map_err(|err| ApiError::internal(format!("the image decoder failed: {err}")))?
        .map_err(|err| ApiError::bad_request(Some("image"), err.to_string()))?;
    Ok(match decoded {
        Some(rgb) => pb::image::Source::Raw(pb::RawFrame {
            width: rgb.width,
            height: rgb.height,
            rgb: rgb.pixels.into(),
        }),
        None => pb::image::Source::Encoded(file),
    })
}

fn parse_colour(text: &str) -> Result<u32, ApiError> {
    let hex = text.trim().trim_start_matches('#');
    if hex.len() == 6 {
        if let Ok(value) = u32::from_str_radix(hex, 16) {
            return Ok(value);
        }
    }
    Err(ApiError::bad_request(
        Some("background"),
        "background must be a colour like `#00ff00`",
    ))
}

fn point(p: &pb::Point) -> Point {
    Point {
        x: p.x,
        y: p.y,
        z: p.z,
        visibility: p.visibility,
        presence: p.presence,
    }
}

pub(crate) fn respond(name: &str, task: pb::VisionTask, reply: pb::VisionReply) -> VisionResponse {
    use base64::Engine as _;
    let wants = |tasks: &[pb::VisionTask]| tasks.contains(&task);
    let faces = wants(&[pb::VisionTask::Face]).then(|| {
        reply
            .faces
            .iter()
            .map(|f| Face {
                bounds: f.r#box.as_ref().map_or(
                    PixelBox {
                        x: 0,
                        y: 0,
                        width: 0,
                        height: 0,
                    },
                    |b| PixelBox {
                        x: b.x,
                        y: b.y,
                        width: b.width,
                        height: b.height,
                    },
                ),
                score: f.score,
                keypoints: f.keypoints.iter().map(point).collect(),
            })
            .collect()
    });
    let face_meshes = wants(&[pb::VisionTask::FaceMesh, pb::VisionTask::Holistic]).then(|| {
        reply
            .face_meshes
            .iter()
            .map(|m| FaceMesh {
                landmarks: m.landmarks.iter().map(point).collect(),
                blendshapes: m
                    .blendshapes
                    .iter()
                    .map(|b| (b.name.clone(), b.score))
                    .collect(),
                gaze: m.gaze.as_ref().map(|g| Gaze {
                    left_x: g.left_x,
                    left_y: g.left_y,
                    right_x: g.right_x,
                    right_y: g.right_y,
                }),
            })
            .collect()
    });
    let hands = wants(&[pb::VisionTask::Hands, pb::VisionTask::Holistic]).then(|| {
        reply
            .hands
            .iter()
            .map(|h| Hand {
                landmarks: h.landmarks.iter().map(point).collect(),
                handedness: h.handedness.clone(),
                handedness_score: h.handedness_score,
                gesture: (!h.gesture.is_empty()).then(|| h.gesture.clone()),
                gesture_score: (!h.gesture.is_empty()).then_some(h.gesture_score),
            })
            .collect()
    });
    let poses = wants(&[pb::VisionTask::Pose, pb::VisionTask::Holistic]).then(|| {
        reply
            .poses
            .iter()
            .map(|p| Pose {
                landmarks: p.landmarks.iter().map(point).collect(),
                world_landmarks: p.world_landmarks.iter().map(point).collect(),
                angles: p
                    .angles
                    .iter()
                    .map(|a| (a.joint.clone(), a.degrees))
                    .collect(),
            })
            .collect()
    });
    let segmentation = task == pb::VisionTask::Segmentation;
    let encode = |png: &[u8]| {
        (!png.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(png))
    };
    VisionResponse {
        task: name.to_string(),
        width: reply.width,
        height: reply.height,
        elapsed_ms: reply.elapsed_ms,
        faces,
        face_meshes,
        hands,
        poses,
        foreground_fraction: segmentation.then_some(reply.foreground_fraction),
        mask_png: if segmentation {
            encode(&reply.mask_png)
        } else {
            None
        },
        image_png: if segmentation {
            encode(&reply.image_png)
        } else {
            None
        },
    }
}
