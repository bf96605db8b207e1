"""The one module of the library that imports Streamlit: the shared model registry and the
per-user session keys. Pages read and write state only through these names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from explorer import zoo
from explorer.capture import Capture, capture
from explorer.display import md
from explorer.errors import InputError, LoadError
from explorer.loading import LoadedModel, LoadRequest
from explorer.registry import ModelRegistry

# st.session_state keys (per browser session)
REQUEST = "model_request"  # the LoadRequest this user has loaded
LOAD_ERROR = "model_load_error"  # the message of this user's last failed load
PENDING = "model_pending"  # a LoadRequest this user is waiting for (survives reruns)
SOURCE = "picker_source"
EMBEDDED = "picker_embedded"
HUB_ID = "picker_hub_id"
FOLDER = "picker_folder"
GGUF = "picker_gguf"
DEVICE = "picker_device"
DTYPE = "picker_dtype"
REMOTE_CODE = "picker_remote_code"
# the text a user looks at, shared by the Attention and Hidden states pages (and the Tasks page's links)
TEXT = "attention_text"
TARGET = "attention_target"  # encoder-decoders: the decoder's prefix
CAPTURE = "capture"  # (key, Capture) of this user's last run
ATTN_KIND = "attention_kind"
ATTN_VIEW = "attention_view"
ATTN_LAYER = "attention_layer"
ATTN_HEAD = "attention_head"
ATTN_GRID = "attention_grid"
ATTN_SCALE = "attention_scale"
ATTN_QUERY = "attention_query"
ATTN_KEY = "attention_key"
ATTN_STAT = "attention_stat"
ATTN_WINDOW = "attention_window"
BERTVIZ_VIEW = "bertviz_view"
BERTVIZ_LAYERS = "bertviz_layers"
HIDDEN_VIEW = "hidden_view"
# the Generate page
STEPPER = "stepper"  # (key, Stepper) of this user's generation
GEN_PROMPT = "generate_prompt"
GEN_SOURCE = "generate_source"
GEN_CHAT = "generate_chat"
GEN_MODE = "generate_mode"
GEN_SEED = "generate_seed"
GEN_TEMPERATURE = "generate_temperature"
GEN_TOP_K = "generate_top_k"
GEN_TOP_P = "generate_top_p"
GEN_REPETITION = "generate_repetition"
GEN_STEPS = "generate_steps"
GEN_HEAD = "generate_head"
GEN_MESSAGE = "generate_message"  # why the last action was refused, shown once
LENS_POSITIONS = "lens_positions"


@st.cache_resource
def registry() -> ModelRegistry:
    """One registry per server process: every session shares the loaded models."""
    return ModelRegistry()


def default_request() -> LoadRequest:
    return LoadRequest("embedded", zoo.DEFAULT_MODEL)


def current_request() -> LoadRequest | None:
    return st.session_state.get(REQUEST)


def load(request: LoadRequest) -> LoadedModel | None:
    """Loads (or finds) `request` with a progress display; on failure shows the message, keeps the
    user's previous model, and returns None."""
    found = registry().get(request)
    if found is not None:
        st.session_state[REQUEST] = request
        st.session_state.pop(LOAD_ERROR, None)
        st.session_state.pop(PENDING, None)
        return found
    # Kept until the load ends: a rerun that interrupts the wait resumes it (the load itself goes on).
    st.session_state[PENDING] = request
    bar = st.progress(0.0, text=f"Loading {md(request.label)} …")

    def progress(stage: str, fraction: float) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"Loading {md(request.label)}: {md(stage)}")

    try:
        with st.spinner(f"Loading {md(request.label)} (the first load of a GGUF model converts it once) …"):
            loaded = registry().load(request, progress)
    except LoadError as err:
        st.session_state[LOAD_ERROR] = str(err)
        st.session_state.pop(PENDING, None)
        return None
    finally:
        bar.empty()
    st.session_state.pop(PENDING, None)
    st.session_state[REQUEST] = request
    st.session_state.pop(LOAD_ERROR, None)
    return loaded


def current_model() -> LoadedModel | None:
    """This user's model; loads the default embedded model on a first visit."""
    pending = st.session_state.get(PENDING)
    if pending is not None:
        resumed = load(pending)
        if resumed is not None:
            return resumed
    if REQUEST not in st.session_state:  # first visit
        return None if LOAD_ERROR in st.session_state else load(default_request())
    request = st.session_state[REQUEST]
    if request is None:  # this user unloaded their model
        return None
    found = registry().get(request)
    return found if found is not None else load(request)


@contextmanager
def model_turn(loaded: LoadedModel, what: str = "") -> Iterator[None]:
    """Holds the shared model's lock for this session's work on it. Sessions take turns on one model
    (every session's script runs in its own thread); one that has to wait is told so while it waits.
    The lock is reentrant, so explorer code that takes it again inside runs as usual."""
    if not loaded.lock.acquire(blocking=False):
        note = st.empty()
        note.info(
            f"Waiting for {md(loaded.card.name)}: another session on this server is running it"
            + (f" ({md(what)})" if what else "")
            + ". Yours starts as soon as it is done."
        )
        loaded.lock.acquire()
        note.empty()
    try:
        yield
    finally:
        loaded.lock.release()


def capture_for(loaded: LoadedModel, text: str, target: str | None) -> Capture | None:
    """This user's capture of `text` (and `target`) on `loaded`, run once per change and kept in the
    session; on bad input shows the message and returns None."""
    key = (loaded.request, text, target or None)
    kept = st.session_state.get(CAPTURE)
    if kept is not None and kept[0] == key:
        return kept[1]
    try:
        with st.spinner(f"Running {md(loaded.card.name)} and keeping every attention map …"):
            cap = capture(loaded, text, target=target or None)
    except InputError as err:
        st.error(md(err))
        return None
    st.session_state[CAPTURE] = (key, cap)
    return cap


def unload(request: LoadRequest) -> bool:
    from explorer.tasks import forget_heads

    forget_heads(request)  # head classes the Tasks page loaded for this model
    done = registry().unload(request)
    if current_request() == request:
        st.session_state[REQUEST] = None
    return done
