"""A classroom in one browser: eight sessions at once, each with its own text on the embedded decoder,
each seeing its own tokens and the very maps the model computes for its text; and a copied link that
opens the same view in another session."""

from __future__ import annotations

import base64
from html import escape
from urllib.parse import urlencode

import numpy as np
import pytest
from playwright.sync_api import expect

from explorer.models.loading import LoadRequest, load_model
from explorer.runs.capture import capture
from tests.e2e.conftest import rerun, screenshot, wait_for_app_run, watch_runs

pytestmark = pytest.mark.e2e

TEXTS = [
    "The capital of France is Paris.",
    "Seven students walked to the library after lunch.",
    "Photosynthesis turns light into sugar.",
    "My dog chased a red ball across the park.",
    "A prime number has exactly two divisors.",
    "The orchestra tuned up before the concert began.",
    "Rain fell on the old stone bridge all night.",
    "She wrote the proof on the blackboard in chalk.",
]
READ_MAP = """() => {
  const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  if (!plot || !plot.data) return null;
  const d = plot.data[0];
  const z = d.z.bdata ? d.z : Array.from(d.z, row => Array.from(row));  // as sent, or decoded
  return {title: plot.layout.title.text, y: Array.from(d.y), z: z};
}"""


def read_map(page) -> dict:
    page.wait_for_function(f"({READ_MAP})() !== null", timeout=180_000)
    return page.evaluate(READ_MAP)


def as_array(z) -> np.ndarray:
    """A heatmap's z as Plotly holds it: a base64 typed array with its shape, or rows of numbers."""
    if isinstance(z, dict):
        shape = [int(n) for n in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.array(z, dtype=np.float32)


@pytest.fixture(scope="module")
def smollm2():
    return load_model(LoadRequest("embedded", "smollm2-135m-instruct"))


def test_eight_sessions_at_once_each_see_their_own_text(browser, app_url, smollm2):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    pages = [context.new_page() for _ in TEXTS]
    try:
        for pg, text in zip(pages, TEXTS):  # all eight start before any has finished
            pg.goto(
                f"{app_url}/attention?{urlencode({'text': text, 'layer': 5, 'head': 2})}", wait_until="commit"
            )
        for i, (pg, text) in enumerate(zip(pages, TEXTS)):
            wait_for_app_run(pg)
            shown = read_map(pg)
            assert "layer 5, head 2" in shown["title"]
            expected = capture(smollm2, text)  # what one session alone computes for this text
            tokens = list(expected.sequence.tokens)
            assert shown["y"] == [f"{j}·{escape(t)}" for j, t in enumerate(tokens)], (i, shown["y"])
            z = as_array(shown["z"])
            np.testing.assert_allclose(z, expected.attentions[5, 2], rtol=0, atol=1e-6)
            box = pg.get_by_test_id("stTextArea").locator("textarea").first
            assert box.input_value() == text  # its own text, not a neighbour's
        screenshot(pages[3], "sessions-4-of-8")
    finally:
        context.close()


def test_a_copied_link_opens_the_same_view(browser, app_url):
    first = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    watch_runs(first)
    first.goto(f"{app_url}/attention")
    wait_for_app_run(first)
    box = first.get_by_test_id("stTextArea").locator("textarea").first
    box.fill("Teachers share links with their class.")
    rerun(first, lambda: box.press("Control+Enter"))
    layer = first.get_by_test_id("stSelectbox").filter(has_text="Layer")
    layer.locator("input").fill("12")
    rerun(first, lambda: layer.locator("input").press("Enter"))
    expect(first.get_by_test_id("stPlotlyChart").filter(has_text="layer 12, head 0")).to_be_visible()
    assert "layer=12" in first.url and "text=Teachers" in first.url  # the address bar follows the view
    first.get_by_test_id("stSidebar").get_by_text("Link to this view").click()
    link = first.get_by_test_id("stSidebar").get_by_test_id("stCode").inner_text().strip()
    assert link.startswith(f"{app_url}/attention?") and "layer=12" in link
    mine = read_map(first)

    second = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    second.goto(link)
    wait_for_app_run(second)
    theirs = read_map(second)
    assert theirs == mine
    screenshot(second, "sessions-copied-link")
    first.context.close()
    second.context.close()
