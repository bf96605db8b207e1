"""A classroom on one server: memory and drawing time with 1 and with 10 sessions on SmolLM2.

Starts the app as `make run` does (streamlit on a free port, headless), warms it up (the model loads once),
then drives Debian's Chromium (one browser, one page per session):

- memory_1_mb / memory_10_mb: the server process's resident memory once 1 and then 10 sessions have each
  captured their own 128-token text on the Attention page (each text different, so no capture is shared);
- capture_mb: what one such capture keeps (its arrays, `Capture.nbytes`);
- memory_ratio: (memory_10 - 10 x capture) / memory_1 (target: at most 1.1; every session shares the one
  copy of the model, so only the captures should grow);
- new_session_draw_s_1 / _10: time from opening a session's link to its heatmap drawn, for the first session
  alone, and the median over the nine sessions opened at once while the first is still open;
- layer_change_draw_s_1 / _10: median time from choosing another layer to its heatmap drawn, in one session
  alone (5 changes), and with 10 sessions choosing at the same moment (each session one change);
- server_cpu_s_per_new_session / server_cpu_s_per_layer_change: the server's own CPU time (user + system)
  in the 10-session phases, per session. The browser's ten pages run on the same machine as the server
  here (in a classroom each student's browser runs on their own computer), so the wall-clock times above
  include Chromium drawing ten Streamlit pages on the same cores; the CPU times are the server's share.

Prints one JSON object on its last line. Run: `make bench` or `.venv/bin/python bench/sessions.py`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.attention import PROSE  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs.capture import capture  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

SESSIONS = 10
TOKENS = 128
SUBJECTS = ["printing", "rivers", "glaciers", "bees", "trains", "volcanoes", "violins", "comets", "forests",
            "bridges", "tides"]  # fmt: skip
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def texts(tokenizer) -> list[str]:
    """SESSIONS + 1 different texts of exactly TOKENS tokens (the first warms the server up)."""
    out = []
    for subject in SUBJECTS[: SESSIONS + 1]:
        ids = tokenizer(f"A lesson about {subject}. " + PROSE * 4)["input_ids"][:TOKENS]
        text = tokenizer.decode(ids)
        assert len(tokenizer(text)["input_ids"]) == TOKENS, subject
        out.append(text)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the app did not start")


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU time (user + system) the server and its children have used so far."""
    p = psutil.Process(proc.pid)
    return sum(sum(x.cpu_times()[:2]) for x in [p, *p.children(recursive=True)])


def rss_mb(proc: subprocess.Popen) -> float:
    """Resident memory of the server and any children, after the sessions have gone quiet."""
    time.sleep(3)
    p = psutil.Process(proc.pid)
    return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 2**20


def open_session(context, url: str, layer: int):
    page = context.new_page()
    page.goto(url, wait_until="commit")
    return page


def wait_drawn(page, title: str, timeout: float = 300_000) -> float:
    page.wait_for_selector(DONE, timeout=timeout)
    page.get_by_test_id("stPlotlyChart").filter(has_text=title).first.wait_for(timeout=timeout)
    return time.perf_counter()


def choose_layer(page, layer: int) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has_text="Layer").locator("input")
    box.fill(str(layer))
    box.press("Enter")


def main() -> None:
    from playwright.sync_api import sync_playwright

    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    all_texts = texts(loaded.tokenizer)
    capture_mb = capture(loaded, all_texts[1]).nbytes / 2**20
    del loaded

    port = free_port()
    server = start_server(port)
    base = f"http://127.0.0.1:{port}/attention?"
    result: dict = {"tokens": TOKENS, "sessions": SESSIONS, "capture_mb": round(capture_mb, 1)}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            warm = open_session(context, base + urlencode({"text": "Warming up."}), 0)
            wait_drawn(warm, "layer 0, head 0")
            warm.close()
            result["memory_0_mb"] = round(rss_mb(server), 1)

            t0 = time.perf_counter()
            first = open_session(context, base + urlencode({"text": all_texts[1], "layer": 1}), 1)
            result["new_session_draw_s_1"] = round(wait_drawn(first, "layer 1, head 0") - t0, 2)
            memory_1 = rss_mb(server)
            alone = []
            for layer in (2, 3, 4, 5, 6):
                t0 = time.perf_counter()
                choose_layer(first, layer)
                alone.append(wait_drawn(first, f"layer {layer}, head 0") - t0)
            result["layer_change_draw_s_1"] = round(statistics.median(alone), 3)

            starts, pages = [], [first]
            cpu_0 = cpu_s(server)
            for i in range(2, SESSIONS + 1):
                starts.append(time.perf_counter())
                pages.append(open_session(context, base + urlencode({"text": all_texts[i], "layer": 1}), 1))
            opened = [wait_drawn(pg, "layer 1, head 0") - t for pg, t in zip(pages[1:], starts)]
            result["new_session_draw_s_10"] = round(statistics.median(opened), 2)
            result["server_cpu_s_per_new_session"] = round((cpu_s(server) - cpu_0) / (SESSIONS - 1), 3)
            memory_10 = rss_mb(server)

            starts = []
            cpu_0 = cpu_s(server)
            for pg in pages:
                starts.append(time.perf_counter())
                choose_layer(pg, 7)
            together = [wait_drawn(pg, "layer 7, head 0") - t for pg, t in zip(pages, starts)]
            result["layer_change_draw_s_10"] = round(statistics.median(together), 3)
            result["server_cpu_s_per_layer_change"] = round((cpu_s(server) - cpu_0) / SESSIONS, 3)
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    result["memory_1_mb"] = round(memory_1, 1)
    result["memory_10_mb"] = round(memory_10, 1)
    result["memory_ratio"] = round((memory_10 - SESSIONS * capture_mb) / memory_1, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
