"""One copy of each loaded model per process, shared by every user of the app."""

from __future__ import annotations

import gc
import threading

import torch

from explorer.loading import LoadedModel, LoadRequest, Progress, load_model


class ModelRegistry:
    """Thread-safe: two sessions asking for the same model wait for one load, not two."""

    def __init__(self) -> None:
        self._models: dict[LoadRequest, LoadedModel] = {}
        self._key_locks: dict[LoadRequest, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, request: LoadRequest) -> LoadedModel | None:
        with self._guard:
            return self._models.get(request)

    def load(self, request: LoadRequest, progress: Progress | None = None) -> LoadedModel:
        with self._guard:
            key_lock = self._key_locks.setdefault(request, threading.Lock())
        with key_lock:
            with self._guard:
                found = self._models.get(request)
            if found is not None:
                return found
            loaded = load_model(request, progress)
            with self._guard:
                self._models[request] = loaded
            return loaded

    def unload(self, request: LoadRequest) -> bool:
        with self._guard:
            removed = self._models.pop(request, None)
        if removed is None:
            return False
        del removed
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._models.values())
