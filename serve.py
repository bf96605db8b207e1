"""`make run`: `streamlit run app.py`, with the default model loaded as the server starts.

A plain `streamlit run app.py` imports torch and transformers and loads the model only when the first
browser arrives. Here a thread does both once Streamlit has set up its server and a first visitor's first
page has been drawn, or a few seconds have passed with none (explorer.serving.startup says why), so the
model is ready sooner (bench/first_picture.py). The arguments are those of `streamlit run`.
"""

import logging
import sys
import threading
import time

from explorer.serving import startup


def _preload() -> None:
    from streamlit import runtime

    deadline = time.monotonic() + 60
    while not runtime.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.perf_counter()
    startup.wait_for_first_page()  # not while a first visitor's page is drawn (explorer.serving.startup)
    # The registry is Streamlit's process-wide resource cache, read here outside any browser session.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    try:
        from explorer import session
        from explorer.models import registry

        loaded = session.preload()
    finally:
        startup.preload_coming.clear()
    took = time.perf_counter() - started
    if loaded is not None:  # tests/e2e/conftest.py waits for this line
        print(f"The default model {loaded.card.name} is loaded ({took:.1f} s).", file=sys.stderr, flush=True)
    else:
        print("The default model could not be loaded: the first visitor's page says why.", file=sys.stderr)
    registry.resettle_every(60.0)


if __name__ == "__main__":
    startup.preload_coming.set()
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    from streamlit.web import cli

    cli.main(["run", "app.py", *sys.argv[1:]], prog_name="streamlit")
