"""A fresh server's first visitor in Chromium: the Attention page comes drawn from the default model's saved
first view (explorer.runs.saved) while the model loads, says so, and runs again live on its own once the
model is in, with the same map."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from explorer import session
from explorer.runs import saved
from tests.e2e.conftest import VIEWPORT, app_server, screenshot, wait_for_app_run, worker
from tests.e2e.test_sessions import as_array, read_map

pytestmark = pytest.mark.e2e
NOTE = "run of this text saved on this machine"


@pytest.fixture
def fresh_server():
    """`make run` whose preload waits for this test's browser (however long the machine takes to open it),
    so that its first page comes while the model is still loading."""
    env = {"TRANSFORMER_EXPLORER_VISITOR_WAIT": "300"}
    with app_server(f"server-first-view-{worker()}", env, model_loaded=False) as (url, log):
        yield url, log


def test_the_first_visitor_sees_the_saved_view_then_the_live_page(browser, fresh_server):
    view = saved.find(session.default_request())
    assert view is not None, "no saved first view: `make test` writes it (python -m explorer prepare)"
    url, log = fresh_server
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{url}/attention")
        wait_for_app_run(page)
        sidebar, main = page.get_by_test_id("stSidebar"), page.get_by_test_id("stMain")
        expect(main.get_by_text(NOTE)).to_be_visible()
        expect(sidebar.get_by_text("Loading smollm2-135m-instruct")).to_be_visible()
        expect(sidebar.get_by_text("Loaded:")).to_have_count(0)
        assert "is loaded" not in log.read_text()  # the model really was still loading
        shown = read_map(page)
        assert "layer 0, head 0" in shown["title"]
        np.testing.assert_allclose(as_array(shown["z"]), view.capture.attentions[0, 0], rtol=0, atol=1e-6)
        screenshot(page, "first-view-saved")

        # no action here: the page runs again by itself once the model is in
        expect(sidebar.get_by_text("Loaded: smollm2-135m-instruct")).to_be_visible(timeout=300_000)
        wait_for_app_run(page)
        expect(main.get_by_text(NOTE)).to_have_count(0)
        assert "is loaded" in log.read_text()
        live = read_map(page)
        assert live["y"] == shown["y"]
        np.testing.assert_allclose(as_array(live["z"]), view.capture.attentions[0, 0], rtol=0, atol=1e-5)
        screenshot(page, "first-view-live")
    finally:
        context.close()
