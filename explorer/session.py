"""The one module of the library that imports Streamlit: the shared model registry and the
per-user session keys. Pages read and write state only through these names."""

from __future__ import annotations

import streamlit as st

from explorer import zoo
from explorer.display import md
from explorer.errors import LoadError
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


def unload(request: LoadRequest) -> bool:
    done = registry().unload(request)
    if current_request() == request:
        st.session_state[REQUEST] = None
    return done
