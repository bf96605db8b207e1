"""`make run`: `streamlit run app.py`, with the default model loading from the moment the server starts.

A plain `streamlit run app.py` imports torch and transformers and loads the model only when the first
browser arrives. Here a thread does both as soon as Streamlit has set up its server (started earlier, it
would slow that start: Python runs one thread at a time), so the first picture comes sooner
(bench/first_picture.py). The arguments are those of `streamlit run`.
"""

import logging
import sys
import threading
import time


def _preload() -> None:
    from streamlit import runtime

    deadline = time.monotonic() + 60
    while not runtime.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The registry is Streamlit's process-wide resource cache, read here outside any browser session.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    from explorer import session
    from explorer.models import registry

    session.preload()
    registry.resettle_every(60.0)


if __name__ == "__main__":
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    from streamlit.web import cli

    cli.main(["run", "app.py", *sys.argv[1:]], prog_name="streamlit")
