"""Browser tests: the app started with the README's command, driven in Debian's Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", "--no-first-run",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(name: str, env: dict | None = None, model_loaded: bool = True):
    """`make run` on a free port, its output in ARTIFACTS/`name`.log; yields (its URL, the log's path) once
    the server answers its health check and, with `model_loaded`, has loaded the default model (serve.py
    says so in its log)."""
    port = _free_port()
    log = ARTIFACTS / f"{name}.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["make", "run", f"PORT={port}"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"make run exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if not model_loaded or "The default model" in log.read_text(errors="replace"):
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            if time.time() > deadline:
                pytest.fail("the app did not start within 10 minutes")
            time.sleep(0.2)
        yield url, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def app_url():
    """The app for a test process's browser tests (one log per process). The tests see the pages drawn on
    the model itself, not its saved first view (tests/e2e/test_first_view.py looks at that one)."""
    with app_server(f"server-{worker()}") as (url, _):
        yield url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


VIEWPORT = {"width": 1500, "height": 1200}


class _Tab:
    """One browser tab per test process, handed to each test in turn. Opening the app in a new tab cost
    Chromium 7 to 9 s of CPU (a new renderer process compiling Streamlit's scripts), against 2 to 3.5 s in
    a tab that had shown the app before, measured on this 2-core machine; with this, the whole suite ran
    in 11 min 35 s against 15 min 26 s the run before (README, "Speed"). Each test still starts from a
    page of its own (its first `goto` loads the app anew, with a new Streamlit session); what is shared is
    the renderer process and its compiled code. Tests that need a second browser (a link opened
    elsewhere, eight sessions at once) make their own context."""

    def __init__(self, browser) -> None:
        self.browser = browser
        self.page = None

    def take(self):
        if self.page is None or self.page.is_closed():
            context = self.browser.new_context(viewport=VIEWPORT)
            self.page = context.new_page()
            self.page.on("dialog", lambda d: (self.page.dialogs.append(d.message), d.dismiss()))
            watch_runs(self.page)
        self.page.context.clear_cookies()
        self.page.dialogs = []
        self.page.set_viewport_size(VIEWPORT)
        return self.page

    def give_back(self) -> None:
        """Leaves the app (its session ends, its script stops); a tab that cannot is dropped."""
        try:
            self.page.goto("about:blank", timeout=20_000)
        except Exception:  # a crashed or hung tab: the next test gets a new one
            self.page.context.close()
            self.page = None


@pytest.fixture(scope="session")
def _tab(browser):
    return _Tab(browser)


@pytest.fixture
def page(_tab):
    pg = _tab.take()
    yield pg
    _tab.give_back()


def wait_for_app_run(page, timeout: float = 180_000) -> None:
    """Connected, the script finished, and no skeleton left (as Streamlit's own e2e tests wait)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_selector('[data-testid="stSkeleton"]', state="detached", timeout=timeout)


def watch_runs(page) -> None:
    """Counts the script runs that the app server reports finished to `page` (`page.runs_finished`):
    Streamlit's script_finished messages on the page's websocket, a run cut short by the next one not
    counted. Call it before the page opens the app; the shared tab does."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    page.runs_finished = 0

    def count(payload) -> None:
        if isinstance(payload, bytes):
            msg = ForwardMsg.FromString(payload)
            if msg.WhichOneof("type") == "script_finished":
                page.runs_finished += msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN

    def listen(ws) -> None:
        if ws.url.endswith("/_stcore/stream"):
            ws.on("framereceived", count)

    page.on("websocket", listen)


def rerun(page, act, timeout: float = 180_000) -> None:
    """Does `act()` (a key or a click that reruns the page's script) on the idle page and waits until the
    server has finished the run it started and the page has drawn it. Not a fixed pause before waiting:
    on a busy machine the run had not started 300 ms after Ctrl+Enter, the wait found the page idle, and
    the test read it mid-run (FFN memory's old chart and new chart both on the page, in one of five
    fresh-clone runs). Nor the page's script state: a run of a few tens of milliseconds can start and
    end within one update of the page, which then never says "running" (a lesson's Check button)."""
    if not hasattr(page, "runs_finished"):
        raise RuntimeError("rerun(page, ...) needs watch_runs(page) before the page opened the app")
    wait_for_app_run(page, timeout)
    before = page.runs_finished
    act()
    wait_for_run_after(page, before, timeout)
    wait_for_app_run(page, timeout)


def wait_for_run_after(page, before: int, timeout: float, poll_ms: float = 25) -> None:
    """Waits until the server has reported a run finished to `page` since its count (`watch_runs`) was
    `before`; Playwright's TimeoutError after `timeout` ms."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout / 1000
    while page.runs_finished == before:
        if time.monotonic() > deadline:
            raise PlaywrightTimeout(f"no run of the app ended within {timeout / 1000:.0f} s of the action")
        page.wait_for_timeout(poll_ms)  # Playwright hands the websocket's messages over while it waits


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
