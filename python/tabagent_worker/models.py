"""Loaded models, in memory only: the worker keeps nothing on disk and forgets everything when it
stops (tabagent loads again what it needs)."""

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from .errors import InvalidInput
from .files import FileProvider
from .protocol import pb

Loader = Callable[[FileProvider, str], Any]


def resident_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Loaded:
    model_id: str
    kind: int
    ram_bytes: int
    vram_bytes: int
    value: Any

    def describe(self) -> "pb.LoadedModel":
        return pb.LoadedModel(
            model_id=self.model_id,
            kind=self.kind,
            ram_bytes=self.ram_bytes,
            vram_bytes=self.vram_bytes,
        )


class Registry:
    """Models by id; concurrent first uses of one model share one load."""

    def __init__(self, files: FileProvider, loaders: dict[int, Loader]):
        self._files = files
        self._loaders = loaders
        self._lock = threading.Lock()
        self._models: dict[str, Loaded] = {}
        self._loading: dict[str, threading.Lock] = {}

    def get(self, model_id: str, kind: int) -> Any:
        return self.load(model_id, kind).value

    def load(self, model_id: str, kind: int) -> Loaded:
        if not model_id:
            raise InvalidInput("a model id is required")
        loader = self._loaders.get(kind)
        if loader is None:
            raise InvalidInput(f"unknown model kind {kind}")
        with self._lock:
            loaded = self._models.get(model_id)
            if loaded is not None and loaded.kind == kind:
                return loaded
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:
            with self._lock:
                loaded = self._models.get(model_id)
                if loaded is not None and loaded.kind == kind:
                    return loaded
            before = resident_bytes()
            value = loader(self._files, model_id)
            loaded = Loaded(
                model_id=model_id,
                kind=kind,
                ram_bytes=max(0, resident_bytes() - before),
                vram_bytes=_vram_bytes(value),
                value=value,
            )
            with self._lock:
                previous = self._models.get(model_id)
                self._models[model_id] = loaded
            if previous is not None:
                _close(previous.value)
            return loaded

    def unload(self, model_id: str) -> bool:
        with self._lock:
            loaded = self._models.pop(model_id, None)
        if loaded is None:
            return False
        _close(loaded.value)
        return True

    def list(self) -> list[Loaded]:
        with self._lock:
            return list(self._models.values())

    def close(self):
        for model_id in [m.model_id for m in self.list()]:
            self.unload(model_id)


def _close(value: Any):
    close = getattr(value, "close", None)
    if callable(close):
        close()


def _vram_bytes(value: Any) -> int:
    measure = getattr(value, "vram_bytes", None)
    return int(measure()) if callable(measure) else 0
