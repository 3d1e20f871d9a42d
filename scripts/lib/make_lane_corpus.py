"""Writes the vision lane's fuzz corpus (tests/corpus/vision-lane): framed requests as tabagent
sends them (requests/) and framed answers as the worker writes them (answers/), each a 4-byte
little-endian length and a protobuf message of proto/ml_worker.proto. The answers are real:
MediaPipe run on the test pictures. Run with the worker's Python, its package on the path:

    PYTHONPATH=<worker src> <worker venv>/bin/python scripts/lib/make_lane_corpus.py \\
        MEDIAPIPE_DIR ASTRONAUT_PNG tests/images/two-hands.png tests/corpus/vision-lane
"""

import struct
import sys
from pathlib import Path

import cv2
import numpy as np

from tabagent_worker import vision
from tabagent_worker.protocol import pb


def framed(message) -> bytes:
    body = message.SerializeToString()
    return struct.pack("<I", len(body)) + body


def main(mediapipe_dir: str, astronaut: str, hands: str, out: str):
    files = {p.name: p.read_bytes() for p in Path(mediapipe_dir).iterdir() if p.is_file()}
    model = vision.MediaPipeModel("mediapipe", files)
    requests, answers = Path(out, "requests"), Path(out, "answers")
    requests.mkdir(parents=True, exist_ok=True)
    answers.mkdir(parents=True, exist_ok=True)

    def request(task, image: "pb.Image", **extra) -> "pb.VisionRequest":
        return pb.VisionRequest(task=task, image=image, model_id="mediapipe", **extra)

    tiny_raw = pb.Image(raw=pb.RawFrame(width=4, height=2, rgb=bytes(range(24))))
    # A small PNG keeps the requests short enough for the fuzzer's edits to matter.
    ok, small_png = cv2.imencode(".png", np.full((8, 16, 3), 200, dtype=np.uint8))
    assert ok
    small_png = small_png.tobytes()
    cases = {
        "face-raw": request(pb.VISION_TASK_FACE, tiny_raw, min_confidence=0.5, max_results=2),
        "hands-png": request(pb.VISION_TASK_HANDS, pb.Image(encoded=small_png)),
        "segmentation-blur": request(
            pb.VISION_TASK_SEGMENTATION, tiny_raw,
            effect=pb.BACKGROUND_EFFECT_BLUR, blur_kernel=5,
        ),
    }
    for name, message in cases.items():
        (requests / name).write_bytes(framed(message))
    (requests / "two-back-to-back").write_bytes(framed(cases["face-raw"]) * 2)

    astronaut_image = pb.Image(encoded=Path(astronaut).read_bytes())
    replies = {
        "face": vision.analyze(model, request(pb.VISION_TASK_FACE, astronaut_image)),
        "two-hands": vision.analyze(
            model, request(pb.VISION_TASK_HANDS, pb.Image(encoded=Path(hands).read_bytes()))
        ),
        "pose": vision.analyze(model, request(pb.VISION_TASK_POSE, astronaut_image)),
    }
    for name, reply in replies.items():
        (answers / name).write_bytes(framed(pb.LaneReply(reply=reply)))
    error = pb.LaneReply(error=pb.LaneError(code=3, message="the image could not be decoded"))
    (answers / "error").write_bytes(framed(error))
    (answers / "face-then-error").write_bytes(framed(pb.LaneReply(reply=replies["face"])) + framed(error))
    model.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
