"""One copy of each loaded model per process, shared by every user of the app.

A load runs in a worker thread owned by the registry, not in the caller's thread: a Streamlit
rerun interrupts the script that waits (and shows progress), never the load itself, so a
60-second GGUF conversion is not restarted each time its user clicks something.
"""

from __future__ import annotations

import gc
import threading
import time

import torch

from explorer.errors import LoadError, first_line
from explorer.models.loading import LoadedModel, LoadRequest, Progress, load_model

# Loads run one at a time in a process. Two at once (the server's preload of the default model and a link's
# own model, on a fresh server) raced in transformers' lazy imports: "cannot import name 'AutoConfig' from
# 'transformers'" in the second load, seen in Chromium. A load mostly uses the CPU anyway.
_ONE_LOAD_AT_A_TIME = threading.Lock()


def _settle() -> None:
    """Moves every object alive now (the imported modules, the loaded models) out of the garbage
    collector's sight, as after a server's start-up: they live as long as the process, or until `unload`.
    Streamlit collects all generations after each run of a page (runner.postScriptGC), and walking the
    430,000 objects of torch, transformers and a model took it 0.2 s each time, about a third of the app
    server's time in the browser tests. After this it walks only what the runs made. Cyclic garbage that
    was alive at this moment waits for the next `resettle` (a server's, once a minute, or `unload`'s)."""
    gc.collect()
    gc.freeze()


def resettle() -> None:
    """Looks at every object again (those frozen by `_settle` included), collects the cyclic garbage, and
    freezes what is left: 0.2 to 0.3 s for the collector to walk everything once."""
    gc.unfreeze()
    _settle()


def resettle_every(seconds: float = 60.0) -> threading.Thread:
    """A server's periodic full collection: what died in a cycle after being frozen (a dropped capture's
    figures, a closed session's state) is freed within `seconds`, one full walk per period instead of one
    per page run."""

    def loop() -> None:
        while True:
            time.sleep(seconds)
            resettle()

    thread = threading.Thread(target=loop, name="resettle", daemon=True)
    thread.start()
    return thread


class _Job:
    def __init__(self, request: LoadRequest) -> None:
        self.request = request
        self.stage: tuple[str, float] = ("queued", 0.0)
        self.done = threading.Event()
        self.result: LoadedModel | None = None
        self.error: LoadError | None = None

    def report(self, stage: str, fraction: float) -> None:
        self.stage = (stage, fraction)


class ModelRegistry:
    """Thread-safe: sessions asking for the same model wait for one load, not one each."""

    def __init__(self) -> None:
        self._models: dict[LoadRequest, LoadedModel] = {}
        self._jobs: dict[LoadRequest, _Job] = {}
        self._failed: set[LoadRequest] = set()  # the requests whose last load ended in an error
        self._guard = threading.Lock()

    def get(self, request: LoadRequest) -> LoadedModel | None:
        with self._guard:
            return self._models.get(request)

    def loading(self, request: LoadRequest) -> bool:
        with self._guard:
            return request in self._jobs

    def failed(self, request: LoadRequest) -> bool:
        """Whether `request`'s last load ended in an error (and none has started since)."""
        with self._guard:
            return request in self._failed

    def stage(self, request: LoadRequest) -> tuple[str, float] | None:
        """The stage of `request`'s load and its fraction done, while it loads; None otherwise."""
        with self._guard:
            job = self._jobs.get(request)
            return job.stage if job is not None else None

    def start(self, request: LoadRequest) -> None:
        """Starts loading `request` in the background, unless it is loaded or loading; returns at once."""
        with self._guard:
            if request not in self._models:
                self._job(request)

    def _job(self, request: LoadRequest) -> _Job:
        """`request`'s load, started here if none is under way (call with the guard held)."""
        job = self._jobs.get(request)
        if job is None:
            job = self._jobs[request] = _Job(request)
            self._failed.discard(request)
            threading.Thread(target=self._run, args=(job,), name=f"load {request.label}", daemon=True).start()
        return job

    def load(
        self, request: LoadRequest, progress: Progress | None = None, poll_s: float = 0.25
    ) -> LoadedModel:
        """Returns the model, loading it once; `progress(stage, fraction)` is called while waiting."""
        with self._guard:
            found = self._models.get(request)
            if found is not None:
                return found
            job = self._job(request)
        last = None
        while not job.done.wait(poll_s):
            if progress is not None and job.stage != last:
                last = job.stage
                progress(*last)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run(self, job: _Job) -> None:
        try:
            with _ONE_LOAD_AT_A_TIME:
                job.result = load_model(job.request, job.report)
        except LoadError as err:
            job.error = err
        except Exception as err:  # a failure nobody foresaw still reaches the user as a message
            job.error = LoadError(
                f"Loading {job.request.label} failed: {type(err).__name__}: {first_line(err)}"
            )
        with self._guard:
            if job.result is not None:
                self._models[job.request] = job.result
            else:
                self._failed.add(job.request)
            del self._jobs[job.request]
        if job.result is not None:
            _settle()
        job.done.set()

    def unload(self, request: LoadRequest) -> bool:
        with self._guard:
            removed = self._models.pop(request, None)
        if removed is None:
            return False
        del removed
        resettle()  # a model is freed by the collector, not by its reference count (cycles)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._models.values())
