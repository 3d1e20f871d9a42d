"""Speech to text with faster-whisper (CTranslate2). A Whisper model is a CTranslate2 directory
(model.bin, config.json, tokenizer.json, vocabulary.txt) that tabagent serves by model id; it is
loaded from memory, never from disk."""

import io
import os
import threading

import numpy as np

from .errors import InvalidInput, ModelMissing
from .files import FileProvider
from .protocol import pb

# faster-whisper falls back to the Hugging Face Hub for a model it cannot find; the worker has
# no business there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NEEDED = ("model.bin", "config.json", "tokenizer.json")
# The most audio one request may carry, in seconds (at 16 kHz, as Whisper hears it).
MAX_SECONDS = 4 * 3600


class WhisperModel:
    def __init__(self, model):
        self._model = model
        # CTranslate2 runs one transcription at a time per model well; more only contend.
        self._lock = threading.Lock()

    def transcribe(self, request: "pb.TranscribeRequest") -> "pb.TranscribeReply":
        from faster_whisper import decode_audio

        if not request.audio:
            raise InvalidInput("the audio file is empty")
        try:
            samples = decode_audio(io.BytesIO(request.audio), sampling_rate=16000)
        except Exception as err:  # PyAV raises many kinds for a file it cannot read
            raise InvalidInput(f"the audio could not be decoded: {err}") from None
        if samples.size == 0:
            raise InvalidInput("the audio holds no samples")
        if samples.size > MAX_SECONDS * 16000:
            raise InvalidInput(f"the audio is longer than {MAX_SECONDS} seconds")
        if not np.isfinite(samples).all():
            raise InvalidInput("the audio holds samples that are not numbers")
        temperature = request.temperature if request.temperature > 0 else 0.0
        with self._lock:
            segments, info = self._model.transcribe(
                samples,
                language=request.language or None,
                initial_prompt=request.prompt or None,
                temperature=temperature,
                beam_size=1 if temperature == 0.0 else 5,
            )
            segments = list(segments)
        return pb.TranscribeReply(
            text="".join(s.text for s in segments).strip(),
            language=info.language or "",
            duration=float(info.duration),
            segments=[pb.Segment(start=s.start, end=s.end, text=s.text.strip()) for s in segments],
        )


def load(files: FileProvider, model_id: str) -> WhisperModel:
    from faster_whisper import WhisperModel as Whisper

    present = set(files.list(model_id))
    missing = [name for name in NEEDED if name not in present]
    if missing:
        raise ModelMissing(f"model {model_id!r} is not a CTranslate2 Whisper model: no {', '.join(missing)}")
    blobs = {name: files.read(model_id, name) for name in sorted(present) if "/" not in name}
    threads = int(os.environ.get("TABAGENT_WORKER_THREADS", "0"))
    return WhisperModel(
        Whisper(model_id, device="cpu", compute_type="int8", cpu_threads=threads, files=blobs)
    )
