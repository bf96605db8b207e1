"""The first picture: from starting the server to the first attention heatmap drawn in Chromium.

Two servers, started in turns (ROUNDS each, the machine is shared, so the median of each):

- app: the command `make run` ends with, on the default model (caches warm: the model converted once and
  its first view saved by `make run`'s `explorer prepare`); the browser opens the Attention page as soon as
  the server answers its health check, and the clock stops when the heatmap of layer 0, head 0 is drawn
  (while the model loads, that is its saved first view: explorer.runs.saved); a second clock stops when
  the page has run again on the model itself (the sidebar says "Loaded");
- bare: a Streamlit app of a few lines that draws one Plotly heatmap, started and timed the same way.

`ratio` = app / bare (goal: at most 1.5); `live_ratio` = the live page's time / bare. Prints one JSON
object on its last line.
Run: `make bench` or `.venv/bin/python bench/first_picture.py`.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sessions import DONE, free_port  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

ROUNDS = 5
BARE = """
import numpy as np
import plotly.graph_objects as go
import streamlit as st

z = np.random.default_rng(0).random((12, 12))
st.plotly_chart(go.Figure(go.Heatmap(z=z), layout={"title": {"text": "layer 0, head 0"}}))
"""


def serve_command(port: int) -> list[str]:
    """What `make run` runs once the setup is done (see the Makefile's `run`)."""
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "serve-command", f"PORT={port}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def start(command: list[str], port: int, poll_s: float = 0.05) -> subprocess.Popen:
    """`command` (a Streamlit server on `port`) started headless; returns once it answers its health check."""
    env = {**os.environ, "STREAMLIT_SERVER_HEADLESS": "true", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.perf_counter() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                raise SystemExit(f"{command} did not start") from None
            time.sleep(poll_s)


def first_picture(browser, command: list[str], port: int, path: str, title: str, live: str | None = None):
    """Seconds from starting `command` to the heatmap titled `title` drawn at `path`, and to the text
    `live` in the sidebar (the page drawn on the model itself; None: the first)."""
    started = time.perf_counter()
    proc = start(command, port)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}{path}", wait_until="commit")
        page.get_by_test_id("stPlotlyChart").filter(has_text=title).first.wait_for(timeout=300_000)
        page.wait_for_selector(DONE, timeout=300_000)
        elapsed = time.perf_counter() - started
        if live is not None:
            page.get_by_test_id("stSidebar").get_by_text(live).wait_for(timeout=300_000)
            page.get_by_test_id("stPlotlyChart").filter(has_text=title).first.wait_for(timeout=300_000)
            page.wait_for_selector(DONE, timeout=300_000)
        live_s = time.perf_counter() - started
        context.close()
        return elapsed, live_s
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    from playwright.sync_api import sync_playwright

    app, live, bare = [], [], []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        script = Path(tmp) / "bare.py"
        script.write_text(BARE)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(ROUNDS):
            port = free_port()
            picture, drawn_live = first_picture(
                browser, serve_command(port), port, "/attention", "layer 0, head 0", "Loaded:"
            )
            app.append(picture)
            live.append(drawn_live)
            port = free_port()
            command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port)]
            bare.append(first_picture(browser, command, port, "/", "layer 0, head 0")[0])
        browser.close()
    result = {
        "app_s": round(statistics.median(app), 2),
        "bare_s": round(statistics.median(bare), 2),
        "live_s": round(statistics.median(live), 2),
        "app_runs_s": [round(t, 2) for t in app],
        "live_runs_s": [round(t, 2) for t in live],
        "bare_runs_s": [round(t, 2) for t in bare],
    }
    result["ratio"] = round(result["app_s"] / result["bare_s"], 2)
    result["live_ratio"] = round(result["live_s"] / result["bare_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
