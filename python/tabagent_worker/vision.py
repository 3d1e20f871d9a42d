"""MediaPipe vision (the Tasks API): faces, face meshes with iris and gaze, hands with gestures,
poses with joint angles, holistic, and person segmentation with background effects.

A MediaPipe model is a directory of task files tabagent serves by model id; the files each part
needs are named below. Tasks are made per (model, part, settings) on first use and kept; one task
runs one frame at a time (MediaPipe's tasks are not re-entrant), so each has its own lock.
"""

import math
import threading
import time
from dataclasses import dataclass, field

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from .errors import InvalidInput, ModelMissing
from .files import FileProvider
from .protocol import pb

# The file each part reads from a MediaPipe model directory.
FILES = {
    "face": "face_detector.tflite",
    "face_mesh": "face_landmarker.task",
    "hands": "gesture_recognizer.task",
    "pose": "pose_landmarker_full.task",
    "segmentation": "selfie_segmenter.tflite",
}

# Frames larger than this on a side are refused (MediaPipe scales frames down anyway).
MAX_SIDE = 8192

# Pose landmarks (BlazePose's 33) that make each joint: (one end, the joint, the other end).
JOINTS = {
    "left_shoulder": (23, 11, 13),
    "right_shoulder": (24, 12, 14),
    "left_elbow": (11, 13, 15),
    "right_elbow": (12, 14, 16),
    "left_hip": (11, 23, 25),
    "right_hip": (12, 24, 26),
    "left_knee": (23, 25, 27),
    "right_knee": (24, 26, 28),
    "left_ankle": (25, 27, 31),
    "right_ankle": (26, 28, 32),
}

# Face-mesh points around each eye (outer corner, inner corner, upper lid, lower lid) and the
# iris centres (468: right iris, 473: left iris; "right" is the person's).
RIGHT_EYE = (33, 133, 159, 145)
LEFT_EYE = (263, 362, 386, 374)
RIGHT_IRIS, LEFT_IRIS = 468, 473


@dataclass
class MediaPipeModel:
    """A MediaPipe model directory: its task files in memory, and the tasks made from them."""

    model_id: str
    files: dict[str, bytes]
    tasks: dict[tuple, tuple[threading.Lock, object]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def file(self, part: str) -> bytes:
        name = FILES[part]
        data = self.files.get(name)
        if data is None:
            raise ModelMissing(f"model {self.model_id!r} has no {name} (needed for {part})")
        return data

    def task(self, part: str, min_confidence: float, max_results: int):
        key = (part, round(min_confidence, 4), max_results)
        with self.lock:
            found = self.tasks.get(key)
            if found is None:
                found = (threading.Lock(), _make_task(part, self.file(part), min_confidence, max_results))
                self.tasks[key] = found
        return found

    def close(self):
        with self.lock:
            tasks, self.tasks = self.tasks, {}
        for _, task in tasks.values():
            task.close()


def load(files: FileProvider, model_id: str) -> MediaPipeModel:
    """Reads the task files of MediaPipe model `model_id` (those it has of the ones named above)."""
    present = set(files.list(model_id))
    wanted = [name for name in FILES.values() if name in present]
    if not wanted:
        raise ModelMissing(
            f"model {model_id!r} holds none of the MediaPipe task files ({', '.join(FILES.values())})"
        )
    return MediaPipeModel(model_id, {name: files.read(model_id, name) for name in wanted})


def _make_task(part: str, data: bytes, min_confidence: float, max_results: int):
    base = BaseOptions(model_asset_buffer=data)
    image = vision.RunningMode.IMAGE
    if part == "face":
        return vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=base,
                running_mode=image,
                min_detection_confidence=min_confidence,
            )
        )
    if part == "face_mesh":
        return vision.FaceLandmarker.create_from_options(
            vision.FaceLandmarkerOptions(
                base_options=base,
                running_mode=image,
                num_faces=max_results,
                min_face_detection_confidence=min_confidence,
                min_face_presence_confidence=min_confidence,
                output_face_blendshapes=True,
            )
        )
    if part == "hands":
        return vision.GestureRecognizer.create_from_options(
            vision.GestureRecognizerOptions(
                base_options=base,
                running_mode=image,
                num_hands=max_results,
                min_hand_detection_confidence=min_confidence,
                min_hand_presence_confidence=min_confidence,
            )
        )
    if part == "pose":
        return vision.PoseLandmarker.create_from_options(
            vision.PoseLandmarkerOptions(
                base_options=base,
                running_mode=image,
                num_poses=max_results,
                min_pose_detection_confidence=min_confidence,
                min_pose_presence_confidence=min_confidence,
            )
        )
    if part == "segmentation":
        return vision.ImageSegmenter.create_from_options(
            vision.ImageSegmenterOptions(
                base_options=base,
                running_mode=image,
                output_confidence_masks=True,
                output_category_mask=False,
            )
        )
    raise InvalidInput(f"unknown vision part {part!r}")


def decode(image: "pb.Image") -> np.ndarray:
    """The frame as an RGB array (height × width × 3, uint8)."""
    source = image.WhichOneof("source")
    if source == "encoded":
        encoded = image.encoded
        if not encoded:
            raise InvalidInput("the image is empty")
        bgr = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InvalidInput("the image could not be decoded (PNG, JPEG, WebP or BMP expected)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    elif source == "raw":
        raw = image.raw
        if raw.width == 0 or raw.height == 0:
            raise InvalidInput("a raw frame needs a width and a height")
        if max(raw.width, raw.height) > MAX_SIDE:
            raise InvalidInput(f"the image is {raw.width}×{raw.height}; at most {MAX_SIDE} pixels a side")
        pixels = raw.rgb
        if len(pixels) != raw.width * raw.height * 3:
            raise InvalidInput(
                f"a {raw.width}×{raw.height} RGB frame is {raw.width * raw.height * 3} bytes, "
                f"not {len(pixels)}"
            )
        rgb = np.frombuffer(pixels, dtype=np.uint8).reshape(raw.height, raw.width, 3)
    else:
        raise InvalidInput("no image was given")
    height, width = rgb.shape[:2]
    if max(height, width) > MAX_SIDE:
        raise InvalidInput(f"the image is {width}×{height}; at most {MAX_SIDE} pixels a side")
    return np.ascontiguousarray(rgb)


def analyze(model: MediaPipeModel, request: "pb.VisionRequest") -> "pb.VisionReply":
    """Runs the request's task on its frame."""
    started = time.perf_counter()
    rgb = decode(request.image)
    frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
    height, width = rgb.shape[:2]
    confidence = request.min_confidence if request.min_confidence > 0 else 0.5
    if not 0.0 < confidence <= 1.0:
        raise InvalidInput("min_confidence must be between 0 and 1")
    limit = request.max_results if request.max_results > 0 else 4
    reply = pb.VisionReply(width=width, height=height)

    def run(part: str):
        lock, task = model.task(part, confidence, limit)
        with lock:
            if part == "face":
                return task.detect(frame)
            if part == "hands":
                return task.recognize(frame)
            if part == "segmentation":
                return task.segment(frame)
            return task.detect(frame)

    task = request.task
    if task == pb.VISION_TASK_FACE:
        _faces(reply, run("face"), limit)
    elif task == pb.VISION_TASK_FACE_MESH:
        _meshes(reply, run("face_mesh"))
    elif task == pb.VISION_TASK_HANDS:
        _hands(reply, run("hands"))
    elif task == pb.VISION_TASK_POSE:
        _poses(reply, run("pose"))
    elif task == pb.VISION_TASK_HOLISTIC:
        # Face, hands and pose on the same frame: no holistic model ships, and these are the
        # models MediaPipe's holistic graph is made of.
        _meshes(reply, run("face_mesh"))
        _hands(reply, run("hands"))
        _poses(reply, run("pose"))
    elif task == pb.VISION_TASK_SEGMENTATION:
        _segment(reply, run("segmentation"), rgb, request)
    else:
        raise InvalidInput(f"unknown vision task {task}")
    reply.elapsed_ms = (time.perf_counter() - started) * 1000.0
    return reply


def _point(landmark) -> "pb.Point":
    return pb.Point(
        x=landmark.x,
        y=landmark.y,
        z=getattr(landmark, "z", 0.0) or 0.0,
        visibility=getattr(landmark, "visibility", 0.0) or 0.0,
        presence=getattr(landmark, "presence", 0.0) or 0.0,
    )


def _faces(reply, result, limit: int):
    # The detector has no limit of its own: the most certain faces are kept.
    def score(detection) -> float:
        return detection.categories[0].score if detection.categories else 0.0

    for detection in sorted(result.detections, key=score, reverse=True)[:limit]:
        box = detection.bounding_box
        reply.faces.append(
            pb.Face(
                box=pb.Box(x=box.origin_x, y=box.origin_y, width=box.width, height=box.height),
                score=score(detection),
                keypoints=[pb.Point(x=k.x, y=k.y) for k in detection.keypoints],
            )
        )


def _meshes(reply, result):
    blendshapes = result.face_blendshapes or []
    for i, landmarks in enumerate(result.face_landmarks):
        mesh = pb.FaceMesh(landmarks=[_point(p) for p in landmarks])
        if i < len(blendshapes):
            mesh.blendshapes.extend(
                pb.Blendshape(name=c.category_name, score=c.score) for c in blendshapes[i]
            )
        if len(landmarks) > LEFT_IRIS:
            right = _gaze(landmarks, RIGHT_EYE, RIGHT_IRIS)
            left = _gaze(landmarks, LEFT_EYE, LEFT_IRIS)
            mesh.gaze.CopyFrom(pb.Gaze(left_x=left[0], left_y=left[1], right_x=right[0], right_y=right[1]))
        reply.face_meshes.append(mesh)


def _gaze(landmarks, eye: tuple[int, int, int, int], iris: int) -> tuple[float, float]:
    """Where the iris sits in the eye: -1 to 1 across (image left to right) and down."""
    outer, inner, upper, lower = (landmarks[i] for i in eye)
    centre = landmarks[iris]
    left_x, right_x = sorted((outer.x, inner.x))
    top_y, bottom_y = sorted((upper.y, lower.y))

    def place(value: float, low: float, high: float) -> float:
        half = (high - low) / 2.0
        if half <= 1e-6:
            return 0.0
        return max(-1.0, min(1.0, (value - (low + half)) / half))

    return place(centre.x, left_x, right_x), place(centre.y, top_y, bottom_y)


def _hands(reply, result):
    gestures = result.gestures or []
    for i, landmarks in enumerate(result.hand_landmarks):
        hand = pb.Hand(landmarks=[_point(p) for p in landmarks])
        if i < len(result.handedness) and result.handedness[i]:
            side = result.handedness[i][0]
            hand.handedness = side.category_name
            hand.handedness_score = side.score
        if i < len(gestures) and gestures[i]:
            best = gestures[i][0]
            if best.category_name and best.category_name != "None":
                hand.gesture = best.category_name
                hand.gesture_score = best.score
        reply.hands.append(hand)


def _poses(reply, result):
    world = result.pose_world_landmarks or []
    for i, landmarks in enumerate(result.pose_landmarks):
        pose = pb.Pose(landmarks=[_point(p) for p in landmarks])
        if i < len(world):
            pose.world_landmarks.extend(_point(p) for p in world[i])
        for joint, (a, b, c) in JOINTS.items():
            if max(a, b, c) < len(landmarks):
                pose.angles.append(
                    pb.JointAngle(joint=joint, degrees=_angle(landmarks[a], landmarks[b], landmarks[c]))
                )
        reply.poses.append(pose)


def _angle(a, b, c) -> float:
    """The angle at `b` between `a` and `c`, in degrees (0 to 180)."""
    first = (a.x - b.x, a.y - b.y)
    second = (c.x - b.x, c.y - b.y)
    norms = math.hypot(*first) * math.hypot(*second)
    if norms <= 1e-9:
        return 0.0
    cosine = (first[0] * second[0] + first[1] * second[1]) / norms
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _segment(reply, result, rgb: np.ndarray, request):
    if not result.confidence_masks:
        raise InvalidInput("the segmentation model gave no mask")
    confidence = np.squeeze(result.confidence_masks[0].numpy_view())
    person = confidence > 0.5
    mask = np.where(person, 255, 0).astype(np.uint8)
    reply.mask_png = _png(mask)
    reply.foreground_fraction = float(person.mean())
    effect = request.effect
    if effect == pb.BACKGROUND_EFFECT_NONE:
        return
    if effect == pb.BACKGROUND_EFFECT_BLUR:
        kernel = request.blur_kernel or 31
        if kernel % 2 == 0 or kernel > 255:
            raise InvalidInput("blur_kernel must be odd and at most 255")
        background = cv2.GaussianBlur(rgb, (kernel, kernel), 0)
    elif effect == pb.BACKGROUND_EFFECT_REPLACE:
        colour = request.background_rgb
        background = np.empty_like(rgb)
        background[:] = ((colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF)
    else:
        raise InvalidInput(f"unknown background effect {effect}")
    out = np.where(person[..., None], rgb, background).astype(np.uint8)
    reply.image_png = _png(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def _png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise InvalidInput("the result could not be encoded as PNG")
    return encoded.tobytes()
