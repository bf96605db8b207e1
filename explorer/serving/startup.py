"""A server's start, shared by serve.py's preload thread and app.py; imports neither torch nor Streamlit.

On this 2-core machine the default model's load (torch, transformers, the weights: 3 to 4 s of CPU) slowed
everything a first visitor waits for when it ran at once: the server's answer, the browser's fetch of the
app, the first page's run. So serve.py's preload waits while a first visitor's first page is being drawn
(from the model's saved first view: explorer.runs.saved): it waits up to VISITOR_WAIT_S for a session's
first run to start, and then up to FIRST_RUN_WAIT_S for it to end; with no visitor, it loads after
VISITOR_WAIT_S (the environment variable TRANSFORMER_EXPLORER_VISITOR_WAIT sets it, in seconds; 0: load at
once).
"""

import os
import threading

VISITOR_WAIT_S = float(os.environ.get("TRANSFORMER_EXPLORER_VISITOR_WAIT", "3"))
FIRST_RUN_WAIT_S = 10.0
CHARTS_WARMED = "charts_warmed"  # a st.session_state key, here: app.py warms before explorer.session
first_run_started = threading.Event()  # some session's first run has begun
first_run_done = threading.Event()  # some session's first run has ended
preload_coming = threading.Event()  # serve.py's preload will load the default model (set until it has begun)


def wait_for_first_page() -> None:
    """Returns once the preload may begin (see the module's docstring)."""
    if first_run_started.wait(VISITOR_WAIT_S):
        first_run_done.wait(FIRST_RUN_WAIT_S)
