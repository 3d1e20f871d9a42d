"""Speech to text with faster-whisper (CTranslate2). A Whisper model is a CTranslate2 directory
(model.bin, config.json, tokenizer.json, vocabulary.txt) that tabagent serves by model id; it is
loaded from memory, never from disk."""

import io
import itertools
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
# The most audio one request may carry, in seconds: two hours, 460 MB of samples at 16 kHz
# (as Whisper hears them, 32-bit floats). A file that says it is longer is refused from its
# header, before anything is decoded; one that does not say is decoded only up to the limit.
MAX_SECONDS = 2 * 3600
SAMPLE_RATE = 16000


def decode_bounded(audio: bytes, max_seconds: int = MAX_SECONDS) -> "np.ndarray":
    """The audio as 16 kHz mono float32 samples, refused (InvalidInput, naming the limit) when
    its container states a longer duration or its samples run past the limit."""
    import av

    too_long = f"the audio is longer than {max_seconds} seconds, the most one request may carry"
    try:
        container = av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore")
    except Exception as err:  # PyAV raises many kinds for a file it cannot read
        raise InvalidInput(f"the audio could not be decoded: {err}") from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise InvalidInput("the file holds no audio stream")
        stream = streams[0]
        stated = None
        if container.duration is not None:
            stated = container.duration / av.time_base
        elif stream.duration is not None and stream.time_base is not None:
            stated = float(stream.duration * stream.time_base)
        if stated is not None and stated > max_seconds:
            raise InvalidInput(f"{too_long} (it says {stated:.0f} s)")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        limit = max_seconds * SAMPLE_RATE
        chunks, held = [], 0
        try:
            # Every decoded frame, then None: the resampler's flush.
            for frame in itertools.chain(container.decode(stream), [None]):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    held += chunk.size
                    if held > limit:
                        raise InvalidInput(too_long)
                    chunks.append(chunk)
        except InvalidInput:
            raise
        except Exception as err:
            raise InvalidInput(f"the audio could not be decoded: {err}") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


class WhisperModel:
    def __init__(self, model):
        self._model = model
        # CTranslate2 runs one transcription at a time per model well; more only contend.
        self._lock = threading.Lock()

    def transcribe(self, request: "pb.TranscribeRequest") -> "pb.TranscribeReply":
        if not request.audio:
            raise InvalidInput("the audio file is empty")
        samples = decode_bounded(request.audio)
        if samples.size == 0:
            raise InvalidInput("the audio holds no samples")
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
