"""Every page's answer time: a new text typed on each page, for each embedded model, in Chromium.

Starts the app as `make run` does and drives Debian's Chromium. For each embedded model and each page with
a text box, the page is opened (a new session; the model is already loaded) and drawn, then a new text is
typed and sent with Ctrl+Enter; the clock runs from the key to the page drawn again: the script done, no
spinner, every Plotly chart drawn. The Model and Positions pages have no text: the clock runs from a click
on the page's name in the Attention page's sidebar to the page drawn. A page with no text box for a model
(Generate on an encoder) is left out. "hidden_states/lens" is the Hidden states page on its
logit-lens view (decoders only); "attention/stats" the Attention page's head statistics, and
"attention/stats-long" the same for a text of about 1,500 tokens (models that read that many).

Beside it, the same text's forward pass, timed in this process on the same weights (median of 5), so that
each page's time reads as a ratio: `page_s / forward_s`. `excess_s` is what the page takes beyond one forward
pass. Pages do more than one forward pass where they must (a logit lens unembeds every layer, Flow splits
every block, Generate runs the first step); the goal is every page within 1 s of the work it really needs.

Beside each answer, `browser_s`: how long Chromium's main thread for the page was busy meanwhile (React
and Plotly building and drawing the page: script, style, layout, paint). It overlaps the server's run, as
the page draws what arrives; where it is close to `page_s`, the answer waits on the drawing.

Prints one JSON object on its last line: {"pages": [{"model", "page", "page_s", "browser_s",
"forward_s", "ratio", "excess_s", "error"}...], "slowest": ...}.
Run: `make bench` or `.venv/bin/python bench/pages.py [--models NAME ...] [--pages PATH ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.first_picture import serve_command, start  # noqa: E402
from bench.sessions import DONE, free_port  # noqa: E402
from explorer.models import zoo  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs import hooked  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, wait_for_run_after, watch_runs  # noqa: E402

# url path -> the query the page needs beyond the model ("" : the page as it opens)
PAGES = {
    "": "",  # Model
    "attention": "",
    "hidden_states": "",
    "hidden_states/lens": "hidden=Logit+lens",
    "attention/stats": "view=Head+statistics",
    "attention/stats-long": "view=Head+statistics",  # a text of about 1,500 tokens
    "lessons": "",  # the first lesson
    "generate": "",
    "from_scratch": "",
    "positions": "",
    "tokens": "",
    "ffn": "",
    "flow": "",
    "tasks": "",
    "experiments": "",
}
NO_TEXT = {"", "positions"}
SIDEBAR_NAME = {"": "Model", "positions": "Positions"}
TIMEOUT_MS = 120_000  # a page not drawn by then is recorded as such
ARTIFACTS = ROOT / "artifacts" / "bench"
SENTENCE = (
    "The old lighthouse keeper climbed the stairs every night to light the lamp for the ships near the "
    "rocky coast of"
)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip

READY = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSpinner"], [data-testid="stSkeleton"]')) return false;
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!c.querySelector('.main-svg')) return false;
  return true;
}"""


LONG_TOKENS = 1500


def long_text(loaded, index: int) -> str:
    """A text no page has seen of about LONG_TOKENS tokens for this model's tokenizer."""
    words = f"{SENTENCE} page {index}".split()
    text = " ".join(words * (LONG_TOKENS // len(words) + 1))
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"][: LONG_TOKENS - 2]
    return loaded.tokenizer.decode(ids)


def new_text(model: str, index: int) -> str:
    """A text no page has seen (nothing cached), of about 25 tokens; dates for the date normalizer."""
    if model == "date-normalizer":
        return f"{index + 2} {MONTHS[index % 12]} {1990 + index}"
    return f"{SENTENCE} page {index}"


def forward_s(loaded, text: str, repeats: int = 5) -> float:
    """Median seconds of one forward pass of `text` (what every page runs at least once)."""
    ids = hooked.encode(loaded.model, loaded.tokenizer, text)
    kwargs = {**hooked.inputs(loaded.model, ids), **hooked.options(loaded.model)}
    times = []
    with torch.inference_mode():
        loaded.model(**kwargs)
        for _ in range(repeats):
            started = time.perf_counter()
            loaded.model(**kwargs)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def settle(page, timeout: float = 600_000) -> None:
    page.wait_for_selector(DONE, timeout=timeout)
    page.wait_for_function(READY, timeout=timeout, polling=50)


def main_thread_s(cdp) -> float:
    """Seconds the page's main thread has been busy (TaskDuration): script, style, layout, paint."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def timed(page, cdp, act, timeout: float) -> dict:
    """Times `act()` (a key or a click that reruns the page) up to the page drawn again: `page_s`; and
    `browser_s`, how long the page's main thread was busy meanwhile (drawing, mostly). The run's end is the
    server's own word (tests/e2e/conftest.py `watch_runs`): the page's script state missed runs of a few
    tens of milliseconds, which can start and end within one update of the page (the Tasks page's form,
    not drawn within 120 s in one run of 4 December)."""
    settle(page, timeout)
    busy = main_thread_s(cdp)
    before = page.runs_finished
    started = page.evaluate("performance.now()")
    act()
    wait_for_run_after(page, before, timeout, poll_ms=10)
    page.wait_for_function(READY, timeout=timeout, polling=50)
    ended = page.evaluate("performance.now()")
    return {"page_s": round((ended - started) / 1000, 3), "browser_s": round(main_thread_s(cdp) - busy, 3)}


def time_text(page, cdp, text: str, timeout: float = 600_000) -> dict:
    """From Ctrl+Enter with `text` in the page's first text box to the page drawn again (see `timed`)."""
    box = page.locator('[data-testid="stMain"] textarea').first
    box.fill(text)
    return timed(page, cdp, lambda: box.press("Control+Enter"), timeout)


def time_open(page, cdp, name: str, timeout: float = 600_000) -> dict:
    """From a click on the page `name` in the sidebar to the page drawn (see `timed`)."""
    link = page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True)
    return timed(page, cdp, link.click, timeout)


def error_text(page) -> str | None:
    found = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    return found.first.inner_text()[:200] if found.count() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=list(zoo.ZOO))
    parser.add_argument("--pages", nargs="*", default=list(PAGES))
    args = parser.parse_args()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start(serve_command(port), port, poll_s=0.2)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for model in args.models:
                loaded = load_model(LoadRequest("embedded", model))
                decoder = loaded.card.family == "decoder"
                for index, path in enumerate(args.pages):
                    if path == "hidden_states/lens" and not decoder:
                        continue
                    long = path.endswith("-long")
                    reads = (
                        loaded.card.context_length or 10**9
                    ) >= LONG_TOKENS and model != "date-normalizer"
                    if long and not reads:
                        continue  # MiniLM reads 512 tokens; the date normalizer reads dates
                    context = browser.new_context(viewport={"width": 1500, "height": 1100})
                    page = context.new_page()
                    watch_runs(page)
                    cdp = context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    url_path, _, _ = path.partition("/")
                    query = "&".join(q for q in (f"model={model}", PAGES[path]) if q)
                    text = long_text(loaded, index) if long else new_text(model, index)
                    row = {"model": model, "page": path or "model"}
                    try:
                        if path in NO_TEXT:  # opened from the sidebar of a page that has drawn a chart
                            page.goto(f"{base}/attention?{query}")
                            settle(page)
                            row.update(time_open(page, cdp, SIDEBAR_NAME[path], TIMEOUT_MS))
                        else:
                            page.goto(f"{base}/{url_path}?{query}")
                            settle(page)
                            if not page.locator('[data-testid="stMain"] textarea').count():
                                context.close()  # the page has nothing to type for this model
                                continue
                            row.update(time_text(page, cdp, text, TIMEOUT_MS))
                    except PlaywrightTimeout:  # recorded, with a picture of the page; the next one goes on
                        ARTIFACTS.mkdir(parents=True, exist_ok=True)
                        shot = ARTIFACTS / f"{model}-{url_path or 'model'}.png"
                        page.screenshot(path=shot, full_page=True)
                        row.update(page_s=None, error=f"not drawn within {TIMEOUT_MS / 1000:.0f} s: {shot}")
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        rows.append(row)
                        context.close()
                        continue
                    row["forward_s"] = round(forward_s(loaded, text), 4)
                    row["ratio"] = round(row["page_s"] / row["forward_s"], 1)
                    row["excess_s"] = round(row["page_s"] - row["forward_s"], 3)
                    row["error"] = error_text(page)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
                    context.close()
                del loaded
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    timed = [r for r in rows if r["page_s"] is not None]
    slowest = sorted(timed, key=lambda r: -r["excess_s"])[:5]
    print(json.dumps({
        "pages": rows,
        "slowest": [f"{r['model']} {r['page']}: {r['page_s']} s" for r in slowest],
        "over_1s_beyond_one_forward": sum(r["excess_s"] > 1 for r in timed),
        "not_drawn": [f"{r['model']} {r['page']}" for r in rows if r["page_s"] is None],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
