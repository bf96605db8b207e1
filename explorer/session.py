"""The one module of the library that imports Streamlit: the shared model registry and the
per-user session keys. Pages read and write state only through these names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from explorer.errors import InputError, LoadError
from explorer.models import zoo
from explorer.models.devices import release_freed_memory
from explorer.models.loading import LoadedModel, LoadRequest
from explorer.models.registry import ModelRegistry
from explorer.runs import saved
from explorer.runs.capture import Capture, capture
from explorer.serving import links, startup
from explorer.serving.links import Param
from explorer.serving.store import CaptureStore
from explorer.web.display import md

# st.session_state keys (per browser session)
REQUEST = "model_request"  # the LoadRequest this user has loaded
LOAD_ERROR = "model_load_error"  # the message of this user's last failed load
PENDING = "model_pending"  # a LoadRequest this user is waiting for (survives reruns)
PREVIEW_OVER = "preview_over"  # this session has left the saved first view (see preview)
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
TEXT_GIVEN = "attention_text_given"  # the example the workspace's text was last given (not the user's)
TARGET = "attention_target"  # encoder-decoders: the decoder's prefix
CAPTURE = "capture"  # the key in the server's CaptureStore of this user's last run
ATTN_KIND = "attention_kind"
ATTN_VIEW = "attention_view"
ATTN_LAYER = "attention_layer"
ATTN_HEAD = "attention_head"
ATTN_GRID = "attention_grid"
ATTN_SCALE = "attention_scale"
ATTN_QUERY = "attention_query"
ATTN_KEY = "attention_key"
PAIR_FOR = "attention_pair_for"  # the attention kind and token ids the token focus pair was chosen on
PAIR_SYNCED = "attention_pair_synced"  # the shared focused token the token focus query last took
ATTN_STAT = "attention_stat"
DETECT_KIND, DETECT_SEED, DETECT_LENGTH = "detect_kind", "detect_seed", "detect_length"  # the head finder
DETECT_CELLS = "detect_cells"  # the pattern the user drew on the workspace text: "query:key,key;..."
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
LENS_FOR = "lens_for"  # the model and token ids the logit lens's positions were chosen on
# the Flow and Experiments pages' keys that links carry (the pages hold their other keys)
# the focused token, shared by the pages that read one position of the same sequence (Flow, FFN memory)
FOCUS, FOCUS_FOR = "focus_position", "focus_for"  # the position; the (model, tokens) it was chosen on
FLOW_POSITION = FOCUS
FLOW_THRESHOLD = "flow_threshold"
EXPERIMENT = "exp_kind"
ABL_TARGET, ABL_MODE = "exp_abl_target", "exp_abl_mode"  # the ablation's text is the workspace's
PATCH_CLEAN, PATCH_CORRUPT = "exp_patch_clean", "exp_patch_corrupt"
PATCH_TARGET, PATCH_FOIL = "exp_patch_target", "exp_patch_foil"
DLA_TARGET, DLA_FOIL = "exp_dla_target", "exp_dla_foil"  # direct logit attribution reads the workspace text
# FFN memory and From scratch: their choices that links carry
FFN_LAYER, FFN_POSITION, FFN_PUSHED = "ffn_layer", FOCUS, "ffn_pushed"
SCRATCH_STACK, SCRATCH_LAYER, SCRATCH_HEAD = "scratch_stack", "scratch_layer", "scratch_head"
# the Positions page's sliders
POS_SINE, POS_LEARNED, POS_REACH = "positions_sine_n", "positions_learned_n", "positions_rotary_reach"
# the Tasks page's link: the task, its text, and whether the answer was shown (the link then runs it)
TASK_CHOICE, TASK_TEXT, TASK_RUN = "tasks_task_kept", "tasks_link_text", "tasks_link_run"
# the Lessons page: which lesson, presentation mode and its screen (0 idea, 1 the model, 2 the question)
LESSON, PRESENT, LESSON_SCREEN = "lesson_id", "lesson_present", "lesson_screen"
GEN_STEER, GEN_STEER_PLUS, GEN_STEER_MINUS = "generate_steer", "generate_steer_plus", "generate_steer_minus"
GEN_STEER_LAYER, GEN_STEER_COEF = "generate_steer_layer", "generate_steer_coef"
# the Features page: the SAE folder a user brought (else the zoo's), the feature opened
FEAT_SAE, FEATURE = "features_sae", "features_feature"
GEN_FEAT_STEER, GEN_FEAT, GEN_FEAT_MODE, GEN_FEAT_VALUE = (
    "generate_feat_steer", "generate_feature", "generate_feat_mode", "generate_feat_value")  # fmt: skip
GEN_ATTR, GEN_ATTR_METHOD = "generate_attr", "generate_attr_method"  # input attribution of each token
GEN_PICKS = "generate_picks"  # tokens a link asks the Generate page to replay: ((token id, forced), ...)
# shareable links
LINK_READ = "link_read"  # this session has read the link it was opened with
LINK_KEYS = "link_keys"  # keys set from the link whose values the page has not yet checked
LINK_PROBLEMS = "link_problems"  # messages about link values that could not be used
LINK_MODEL = "link_model"  # the LoadRequest a link named, until it has loaded

# What a link carries (explorer.serving.links): query parameter -> session key. The page is the URL's path.
LINK = (
    Param("text", TEXT, label="text"),
    Param("target", TARGET, label="target prefix"),
    Param("kind", ATTN_KIND, label="attention kind"),
    Param("view", ATTN_VIEW, label="view"),
    Param("layer", ATTN_LAYER, "int", 0, None, label="layer"),
    Param("head", ATTN_HEAD, "int", 0, None, label="head"),
    Param("scale", ATTN_SCALE, label="colour scale"),
    Param("query", ATTN_QUERY, "int", 0, None, label="query token"),
    Param("key", ATTN_KEY, "int", 0, None, label="key token"),
    Param("stat", ATTN_STAT, label="statistic"),
    Param("detect", DETECT_KIND, label="head pattern"),
    Param("detect_seed", DETECT_SEED, "int", 0, 2**31 - 1, label="probe seed"),
    Param("detect_length", DETECT_LENGTH, "int", 2, 1000, label="probe length"),
    Param("pattern", DETECT_CELLS, label="drawn head pattern"),
    Param("bertviz", BERTVIZ_VIEW, label="bertviz view"),
    Param("hidden", HIDDEN_VIEW, label="hidden-state view"),
    Param("prompt", GEN_PROMPT, label="prompt"),
    Param("source", GEN_SOURCE, label="source"),
    Param("chat", GEN_CHAT, "bool", label="chat-template switch"),
    Param("mode", GEN_MODE, label="choice of token"),
    Param("seed", GEN_SEED, "int", 0, 2**31 - 1, label="seed"),
    Param("temperature", GEN_TEMPERATURE, "float", 0.05, 5.0, label="temperature"),
    Param("top_k", GEN_TOP_K, "int", 0, 1000, label="top-k"),
    Param("top_p", GEN_TOP_P, "float", 0.01, 1.0, label="top-p"),
    Param("penalty", GEN_REPETITION, "float", 0.5, 3.0, label="repetition penalty"),
    Param("picks", GEN_PICKS, "picks", label="generated tokens"),
    Param("steer", GEN_STEER, "bool", label="steering switch"),
    Param("steer_plus", GEN_STEER_PLUS, label="steering toward"),
    Param("steer_minus", GEN_STEER_MINUS, label="steering away from"),
    Param("steer_layer", GEN_STEER_LAYER, "int", 0, None, label="steering layer"),
    Param("steer_coef", GEN_STEER_COEF, "float", -100.0, 100.0, label="steering coefficient"),
    Param("attribute", GEN_ATTR, "bool", label="input attribution switch"),
    Param("sae", FEAT_SAE, label="sparse autoencoder folder"),
    Param("feature", FEATURE, "int", 0, None, label="feature"),
    Param("feature_steer", GEN_FEAT_STEER, "bool", label="feature steering switch"),
    Param("steer_feature", GEN_FEAT, "int", 0, None, label="steered feature"),
    Param("feature_mode", GEN_FEAT_MODE, label="feature steering mode"),
    Param("feature_value", GEN_FEAT_VALUE, "float", -1000.0, 1000.0, label="feature steering value"),
    Param("attr_method", GEN_ATTR_METHOD, label="input attribution method"),
    Param("position", FOCUS, "int", 0, None, label="focused token"),
    Param("threshold", FLOW_THRESHOLD, "float", 0.01, 0.5, label="threshold"),
    Param("ffn_layer", FFN_LAYER, "int", 0, None, label="FFN layer"),
    Param("pushes", FFN_PUSHED, label="token whose neurons are searched"),
    Param("scratch_stack", SCRATCH_STACK, label="attention to compute"),
    Param("scratch_layer", SCRATCH_LAYER, "int", 0, None, label="layer to compute"),
    Param("scratch_head", SCRATCH_HEAD, "int", 0, None, label="head to compute"),
    Param("sine", POS_SINE, "int", 16, 512, label="sinusoidal positions"),
    Param("learned", POS_LEARNED, "int", 8, None, label="learned positions shown"),
    Param("reach", POS_REACH, "int", 16, None, label="distance shown"),
    Param("task", TASK_CHOICE, label="task"),
    Param("task_text", TASK_TEXT, label="task's text"),
    Param("run", TASK_RUN, "bool", label="run the task"),
    Param("experiment", EXPERIMENT, label="experiment"),
    Param("ablate_target", ABL_TARGET, label="target token"),
    Param("ablate_mode", ABL_MODE, label="way to knock out"),
    Param("clean", PATCH_CLEAN, label="clean prompt"),
    Param("corrupt", PATCH_CORRUPT, label="corrupted prompt"),
    Param("patch_target", PATCH_TARGET, label="patching target"),
    Param("foil", PATCH_FOIL, label="foil"),
    Param("dla_target", DLA_TARGET, label="attribution target"),
    Param("dla_foil", DLA_FOIL, label="attribution foil"),
    Param("lesson", LESSON, label="lesson"),
    Param("present", PRESENT, "bool", label="presentation mode"),
    Param("screen", LESSON_SCREEN, "int", 0, 2, label="lesson screen"),
)


@st.cache_resource
def registry() -> ModelRegistry:
    """One registry per server process: every session shares the loaded models."""
    return ModelRegistry()


@st.cache_resource
def store() -> CaptureStore:
    """One store of captures per server process, within its memory budget (explorer.serving.store)."""
    return CaptureStore()


def default_request() -> LoadRequest:
    return LoadRequest("embedded", zoo.DEFAULT_MODEL)


def preload() -> LoadedModel | None:
    """Loads the default model and returns it (None when the load failed: that is left for the first
    visitor's own load to report). `serve.py` calls it in a thread as the server starts (see
    explorer.serving.startup), so the first visitor finds the model loaded, or loading, instead of
    starting the load. (A warm-up run here made the first visitor, arriving at once, wait for the model's
    lock: 0.6 s later to the first picture.)"""
    try:
        return registry().load(default_request())
    except LoadError:
        return None


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
    try:
        with st.spinner(f"Loading {md(request.label)} (the first load of a GGUF model converts it once) …"):
            loaded = fetch(request)
    except LoadError as err:
        st.session_state[LOAD_ERROR] = str(err)
        st.session_state.pop(PENDING, None)
        return None
    st.session_state.pop(PENDING, None)
    st.session_state[REQUEST] = request
    st.session_state.pop(LOAD_ERROR, None)
    return loaded


def switch_to(name: str) -> None:
    """A button's on_click: this user's model becomes the embedded model `name`, on the device and dtype
    they use now; the sidebar shows it, and the run that follows loads it with progress."""
    now = current_request()
    request = LoadRequest("embedded", name, now.device, now.dtype) if now else LoadRequest("embedded", name)
    st.session_state[SOURCE], st.session_state[EMBEDDED] = "embedded", name
    st.session_state[PENDING] = request


def fetch(request: LoadRequest) -> LoadedModel:
    """`request`'s model from the server's registry, loaded first (with a progress bar) if it is not
    there; this user's own model is not changed. LoadError on failure."""
    found = registry().get(request)
    if found is not None:
        return found
    bar = st.progress(0.0, text=f"Loading {md(request.label)} …")

    def progress(stage: str, fraction: float) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"Loading {md(request.label)}: {md(stage)}")

    try:
        return registry().load(request, progress)
    finally:
        bar.empty()


def current_model() -> LoadedModel | None:
    """This user's model; loads the default embedded model on a first visit."""
    pending = st.session_state.get(PENDING)
    if pending is not None:
        resumed = load(pending)
        if resumed is not None:
            return resumed
        if st.session_state.pop(LINK_MODEL, None) == pending:  # a link's model that cannot be loaded
            reason = st.session_state.get(LOAD_ERROR, "").rstrip(".")
            st.session_state.setdefault(LINK_PROBLEMS, []).append(
                f"the link's model {pending.ref!r} could not be loaded ({reason}), so the default model "
                "is shown"
            )
            return load(default_request()) or None
    if REQUEST not in st.session_state:  # first visit
        return None if LOAD_ERROR in st.session_state else load(default_request())
    request = st.session_state[REQUEST]
    if request is None:  # this user unloaded their model
        return None
    found = registry().get(request)
    return found if found is not None else load(request)


def preview() -> saved.SavedView | None:
    """A first visit's picture while the default model is not yet in memory: its saved run of the
    workspace's text (explorer.runs.saved), with the model's load started, when this session has chosen
    no model, no other text and no link's model; else None. The pages that draw a capture (views.common.
    capture_page) show it until `until_live` finds the model in; the rest wait for the model."""
    taken = (REQUEST, PENDING, LOAD_ERROR, LINK_MODEL, PREVIEW_OVER)
    if any(key in st.session_state for key in taken):
        return None
    request = default_request()
    if _load_over(request):  # in, or its load failed: the page's own load runs or reports it
        return None
    view = saved.find(request)
    if view is None or st.session_state.get(TEXT, view.text) != view.text or st.session_state.get(TARGET):
        return None
    return view


def _load_over(request: LoadRequest) -> bool:
    """Whether `request`'s load has ended (the model in, or its load failed); if not, sees that it is
    under way: started here unless serve.py's preload will start it once the first page is drawn."""
    if registry().get(request) is not None or registry().failed(request):
        return True
    if not startup.preload_coming.is_set():
        registry().start(request)  # nothing when it is loading already
    return False


def live(loaded):
    """The model itself, for work that needs more than a saved first view: `loaded` when it is a
    LoadedModel; for a SavedView, this user's model, loaded with progress (the page stops there when the
    load fails)."""
    if not isinstance(loaded, saved.SavedView):
        return loaded
    st.session_state[PREVIEW_OVER] = True
    found = current_model()
    if found is None:
        st.error(md(st.session_state.get(LOAD_ERROR, "The model could not be loaded.")))
        st.stop()
    return found


@st.fragment(run_every=0.5)
def until_live(view: saved.SavedView) -> None:
    """Under a saved first view: its load's progress; once the load has ended (the model in, or an
    error to report), the whole page runs again on the model itself."""
    if _load_over(view.request):
        st.session_state[PREVIEW_OVER] = True
        st.rerun()
    name, fraction = registry().stage(view.request) or ("about to start", 0.0)
    st.progress(min(max(fraction, 0.0), 1.0), text=f"Loading {md(view.request.label)}: {md(name)}")
    when = time.strftime("%d %b %Y %H:%M", time.localtime(view.saved_at))
    st.caption(
        f"Meanwhile this page shows {md(view.card.name)}'s run of this text saved on this machine on {when} "
        "(same weights, device, libraries and code). It is run again live as soon as the model is in "
        "memory; until then, choices that need the model wait for it."
    )


_VIEWS_CHECKED: set[LoadRequest] = set()  # the models whose saved first view this process has checked


def keep_first_view(loaded: LoadedModel, text: str, cap: Capture) -> None:
    """After a live run of `text` (with no target): when it is the default model's first text, saved as its
    first view (explorer.runs.saved) unless the same numbers are saved already. Once per model and
    process."""
    request = loaded.request
    if request != default_request() or request in _VIEWS_CHECKED or text != zoo.default_text(loaded):
        return
    _VIEWS_CHECKED.add(request)
    found = saved.find(request)
    if found is not None and found.text == text and saved.same(found.capture, cap):
        return
    try:
        saved.save(request, loaded.card, text, cap)
    except OSError:  # a read-only cache: no saved view, the first picture waits for the model
        pass


@contextmanager
def model_turn(loaded: LoadedModel, what: str = "") -> Iterator[None]:
    """Holds the shared model's lock (explorer.serving.turns.TurnLock) for this session's work on it. Sessions
    take turns on one model, first come first served (every session's script runs in its own thread);
    one that has to wait is told so while it waits. The lock is reentrant, so explorer code that takes
    it again inside runs as usual."""
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


def shared_run(loaded: LoadedModel, key, what: str, spinner: str, compute):
    """The result under `key` in the server's store, else `compute()` run in this session's turn on the
    model (unless another session ran it meanwhile) and kept there (it must have `nbytes`)."""
    found = store().get(key)
    if found is not None:
        return found
    with model_turn(loaded, what):
        found = store().get(key)  # run by another session while this one waited
        if found is None:
            with st.spinner(spinner):
                found = compute()
            store().put(key, found, found.nbytes)
            release_freed_memory()  # the run's temporaries, and anything the store dropped
    return found


def capture_for(loaded: LoadedModel, text: str, target: str | None) -> Capture | None:
    """The capture of `text` (and `target`) on `loaded`: run once and kept in the server's store (one
    copy for every session that looks at the same text), so that choosing another layer or head runs
    nothing. On bad input shows the message and returns None; when the store had dropped this user's
    capture to free memory, says so and runs it again."""
    key = (loaded.request, text, target or None)
    again = st.session_state.get(CAPTURE) == key and store().was_dropped(key)
    try:
        found = shared_run(
            loaded, key, "a capture", f"Running {md(loaded.card.name)} and keeping every attention map …",
            lambda: capture(loaded, text, target=target or None, max_bytes=store().budget),
        )  # fmt: skip
    except InputError as err:
        st.error(md(err))
        return None
    if again:
        st.info(
            "Your earlier run of this text had been dropped to free memory for the other users of this "
            "server; it was run again."
        )
    st.session_state[CAPTURE] = key
    return found


def figure(cap: Capture, key, build):
    """The figure `key` drawn from `cap`, built once by `build()` and kept with the capture."""
    return store().figure(cap, key, build)


def read_link() -> None:
    """On a session's first run: the values its URL's query parameters carry go into the session (the
    model into the sidebar's choices); what cannot be used is listed for `link_problems`."""
    if st.session_state.get(LINK_READ):
        return
    st.session_state[LINK_READ] = True
    params = st.query_params.to_dict()
    request, problems = links.model_request(params)
    values, more = links.read(LINK, params)
    problems += more
    if request is not None:
        st.session_state[SOURCE] = request.source
        widget = {"embedded": EMBEDDED, "hub": HUB_ID, "folder": FOLDER, "gguf": GGUF}[request.source]
        st.session_state[widget] = request.ref
        st.session_state[DEVICE], st.session_state[DTYPE] = request.device, request.dtype
        st.session_state[PENDING] = st.session_state[LINK_MODEL] = request
    st.session_state.update(values)
    st.session_state[LINK_KEYS] = set(values)
    st.session_state[LINK_PROBLEMS] = problems


def link_problems() -> list[str]:
    """The messages about the link this session was opened with (each shown once)."""
    return st.session_state.pop(LINK_PROBLEMS, None) or []


def from_link(key: str) -> bool:
    """Whether the value under `key` came from the link and has not been checked by a page yet."""
    return key in st.session_state.get(LINK_KEYS, ())


def checked(key: str) -> None:
    st.session_state.get(LINK_KEYS, set()).discard(key)


def write_link(keys: tuple[str, ...], **values) -> tuple[dict[str, str], list[str]]:
    """Puts this user's model and the values under `keys` (or given in `values`, by session key) in the
    URL, so that a copied link opens the same picture. Returns the query parameters, and the names of
    texts too long to carry."""
    request = current_request()
    params = links.model_params(request) if request is not None else {}
    chosen = {k: values[k] if k in values else st.session_state.get(k) for k in keys}
    carried, left_out = links.write(tuple(p for p in LINK if p.key in keys), chosen)
    params.update(carried)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    return params, left_out


def unload(request: LoadRequest) -> bool:
    from explorer.tasks import forget_heads

    forget_heads(request)  # head classes the Tasks page loaded for this model
    store().forget(lambda key: request not in key)  # its captures (and the Flow page's results) go with it
    done = registry().unload(request)
    if current_request() == request:
        st.session_state[REQUEST] = None
    return done
