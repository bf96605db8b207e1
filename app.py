"""Transformer Explorer: `streamlit run app.py` (or `make run`).

Page config, the shared sidebar with the model picker, and the page list.
"""

import sys
import time

import streamlit as st

from explorer.serving import startup  # neither torch nor the app's other modules: see warm_charts


def warm_charts():
    """The first thing each run draws: a slot that, on a session's first run only, holds a hidden chart of
    one cell, so that the browser fetches and starts Streamlit's Plotly code (a 4.6 MB script) while the
    rest of the run goes on (torch and the app's modules importing, a model loading), not after the first
    real chart arrives. Drawn before those imports, in every run, so the page's elements keep their
    places; the run empties it when it ends (the returned slot; None in later runs). Measured on this
    2-core machine (bench/first_picture.py, medians of 4 runs in turns): 12.8 s against 15.0 s from the
    server's start to the first heatmap when it came before a model's load."""
    slot = st.empty()
    if st.session_state.get(startup.CHARTS_WARMED):
        return None
    st.session_state[startup.CHARTS_WARMED] = True
    import plotly.graph_objects as go

    with slot.container(key="chart_warmup"):
        st.html("<style>.st-key-chart_warmup{height:0;overflow:hidden;visibility:hidden}</style>")
        st.plotly_chart(go.Figure(go.Heatmap(z=[[0.0]])), config={"staticPlot": True})
    if "torch" not in sys.modules:
        # A pause for the server's event loop to send the chart: torch's import, next, holds Python's lock
        # for a second at a time, and the browser got the chart only once it was over (first picture
        # 3.9 s against 4.4 s from the server's start, bench/first_picture.py's clock, one probe each).
        time.sleep(0.1)
    return slot


startup.first_run_started.set()  # serve.py's preload waits for this first page (explorer.serving.startup)
st.set_page_config(page_title="Transformer Explorer", page_icon="🔎", layout="wide")
warming = warm_charts()

from explorer import session  # noqa: E402 (after the first drawing, above)
from explorer.models import devices, zoo  # noqa: E402
from explorer.models.loading import LoadRequest  # noqa: E402
from explorer.web.display import md  # noqa: E402

SOURCE_LABELS = {
    "embedded": "Embedded (offline)",
    "hub": "Hugging Face Hub id",
    "folder": "Local folder",
    "gguf": "GGUF file",
}
PREVIEW_PAGES = ("attention", "hidden_states")
DEVICE_LABELS = {
    "auto": "auto (CUDA, else MPS, else CPU)",
    "cpu": "cpu",
    "cuda": "cuda",
    "mps": "mps (Apple GPU)",
    devices.MULTI_GPU: "all GPUs, then CPU (device_map=auto)",
}


def model_picker(previewing: bool) -> None:
    """The sidebar form: which model, where, in which dtype; Load and Unload. `previewing`: the page
    shows the default model's saved first view while it loads (session.preview), so nothing waits here."""
    st.sidebar.header("Model")
    source = st.sidebar.radio(
        "Source", list(SOURCE_LABELS), format_func=SOURCE_LABELS.get, key=session.SOURCE
    )
    if source == "embedded":
        ref = st.sidebar.selectbox(
            "Embedded model",
            list(zoo.ZOO),
            format_func=lambda n: f"{zoo.ZOO[n].title} · {zoo.ZOO[n].family}",
            key=session.EMBEDDED,
        )
        st.sidebar.caption(zoo.ZOO[ref].summary)
    elif source == "hub":
        ref = st.sidebar.text_input(
            "Hub id", placeholder="gpt2, bert-base-uncased, t5-small", key=session.HUB_ID
        )
        st.sidebar.caption("Needs the network, unless the model is already in the local Hugging Face cache.")
    elif source == "folder":
        ref = st.sidebar.text_input("Folder", placeholder="/path/to/checkpoint", key=session.FOLDER)
        st.sidebar.caption("A folder written by save_pretrained: config.json, weights, tokenizer.")
    else:
        ref = st.sidebar.text_input("GGUF file", placeholder="/path/to/model.gguf", key=session.GGUF)
        st.sidebar.caption("Converted once to float32 safetensors and cached; later loads take seconds.")

    with st.sidebar.expander("Device, dtype, remote code"):
        device = st.selectbox(
            "Device",
            devices.device_choices(),
            format_func=lambda d: DEVICE_LABELS.get(d, d),
            key=session.DEVICE,
        )
        dtype = st.selectbox("dtype", list(devices.DTYPE_CHOICES), key=session.DTYPE)
        remote = st.checkbox(
            "Run code from the checkpoint (trust_remote_code)",
            key=session.REMOTE_CODE,
            help="Some checkpoints ship Python files that define the model. Turning this on runs that "
            "code on this machine with your rights. Only do it for authors you trust.",
        )
    request = LoadRequest(source, (ref or "").strip(), device, dtype, remote)
    if st.sidebar.button("Load", type="primary", width="stretch"):
        session.load(request)

    if previewing:
        st.sidebar.info(f"Loading {md(session.default_request().label)} …")
    else:
        session.current_model()  # a first visit loads the default model, with progress
    error = st.session_state.get(session.LOAD_ERROR)
    if error:
        st.sidebar.error(md(error))
    current = session.current_request()
    if current is not None:
        st.sidebar.success(f"Loaded: {md(current.label)} ({current.source})")
    loaded = session.registry().loaded()
    if loaded:
        total = devices.human_bytes(sum(m.card.memory_bytes for m in loaded))
        with st.sidebar.expander(f"Models in memory on this server: {len(loaded)}, {total}"):
            for item in loaded:
                size = devices.human_bytes(item.card.memory_bytes)
                st.caption(f"{md(item.card.name)} · {item.card.device} · {size}")
                if st.button(
                    "Unload",
                    key=f"unload-{hash(item.request)}",
                    help="Frees its memory for every user of this server.",
                ):
                    session.unload(item.request)
                    st.rerun()


session.read_link()  # a session opened from a shared link starts with its model, text and choices
# The pages live in views/, not pages/: with a pages/ folder beside app.py, Streamlit 1.67 runs a
# session's first script run as a pages-folder app and resets every sidebar widget on the user's first
# interaction after it (their first choice of model was lost; seen in Chromium). The menu is drawn at the
# top of the sidebar wherever it is called.
page = st.navigation(
    [
        st.Page("views/model.py", title="Model", icon="🧱", default=True),
        st.Page("views/lessons.py", title="Lessons", icon="🎓"),
        st.Page("views/attention.py", title="Attention", icon="🔦"),
        st.Page("views/hidden_states.py", title="Hidden states", icon="📈"),
        st.Page("views/generate.py", title="Generate", icon="✍️"),
        st.Page("views/from_scratch.py", title="Attention from scratch", icon="🧮"),
        st.Page("views/positions.py", title="Positions", icon="📍"),
        st.Page("views/tokens.py", title="Tokens", icon="🔤"),
        st.Page("views/ffn.py", title="FFN memory", icon="🧠"),
        st.Page("views/flow.py", title="Flow", icon="🌊"),
        st.Page("views/features.py", title="Features", icon="✨"),
        st.Page("views/tasks.py", title="Tasks", icon="🧪"),
        st.Page("views/experiments.py", title="Experiments", icon="🔬"),
    ],
    expanded=True,  # every page in the sidebar: past ten, Streamlit hides the rest behind "View more"
)
# The pages that draw a capture can show the default model's saved first view while it loads.
model_picker(previewing=page.url_path in PREVIEW_PAGES and session.preview() is not None)
for problem in session.link_problems():
    st.warning(f"This link could not be followed exactly: {md(problem)}.")
try:
    page.run()
finally:
    if warming is not None:
        warming.empty()
    startup.first_run_done.set()  # serve.py's preload of the default model may begin
