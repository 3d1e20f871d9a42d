"""Face detection frames per second: through tabagent's whole HTTP path (client → HTTP → gRPC →
the worker → MediaPipe) vs MediaPipe called directly in Python, on the same frame, one frame
at a time, alternating rounds, each side's best kept. The direct side decodes the frame each time
too (the worker does). Two encodings of the 512×512 astronaut: the PNG as shipped (791 KB, the
most bytes to move) and a JPEG at quality 90 (what a camera or a browser sends). Run by
scripts/bench-worker with the worker's own Python.

Usage: bench_worker.py URL FACE_DETECTOR_TFLITE IMAGE [FRAMES] [ROUNDS]"""

import http.client
import json
import sys
import time
import urllib.parse

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision


def direct(detector, png: bytes, frames: int) -> float:
    start = time.perf_counter()
    for _ in range(frames):
        bgr = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        found = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        assert len(found.detections) == 1
    return frames / (time.perf_counter() - start)


def through_http(url: str, png: bytes, frames: int) -> float:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port)
    headers = {"content-type": "application/octet-stream"}
    start = time.perf_counter()
    for _ in range(frames):
        connection.request("POST", "/v1/vision/face", body=png, headers=headers)
        reply = connection.getresponse()
        body = reply.read()
        assert reply.status == 200, body
        assert len(json.loads(body)["faces"]) == 1
    return frames / (time.perf_counter() - start)


def compare(detector, url: str, name: str, frame: bytes, frames: int, rounds: int) -> float:
    direct(detector, frame, 30)
    through_http(url, frame, 30)
    best_direct = best_http = 0.0
    for round_ in range(rounds):
        d = direct(detector, frame, frames)
        h = through_http(url, frame, frames)
        best_direct, best_http = max(best_direct, d), max(best_http, h)
        print(f"{name} round {round_}: direct {d:.1f} frames/s, through tabagent {h:.1f} frames/s")
    ratio = best_direct / best_http
    print(
        f"{name} ({len(frame) // 1024} KB) best: MediaPipe in Python {best_direct:.1f} frames/s, "
        f"through tabagent's HTTP API {best_http:.1f} frames/s; overhead ratio {ratio:.3f}×"
    )
    return ratio


def main():
    url, model, image = sys.argv[1:4]
    frames = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    png = open(image, "rb").read()
    bgr = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=open(model, "rb").read()),
        min_detection_confidence=0.5,
    )
    with vision.FaceDetector.create_from_options(options) as detector:
        for name, frame in (("png", png), ("jpeg", jpeg.tobytes())):
            compare(detector, url, name, frame, frames, rounds)


if __name__ == "__main__":
    main()
