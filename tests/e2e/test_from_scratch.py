"""The Attention from scratch page in a real browser, on the default embedded decoder (SmolLM2)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e

HOSTILE = "The cat </script><b>x</b> <img src=x onerror=alert(1)> sat."


def open_page(page, app_url, title: str) -> None:
    page.goto(app_url)
    wait_for_app_run(page)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)  # the Model page
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=60_000)
    wait_for_app_run(page)


def submit_text(page, text: str, shows) -> None:
    box = page.get_by_role("textbox", name="Text")
    box.fill(text)
    rerun(page, lambda: box.press("Control+Enter"))
    expect(shows).to_be_visible(timeout=60_000)


def test_from_scratch_page_on_smollm2(page, app_url):
    open_page(page, app_url, "Attention from scratch")
    alert = page.get_by_test_id("stAlertContentSuccess").filter(has_text="the computation below matches")
    expect(alert).to_be_visible(timeout=60_000)
    assert alert.inner_text().startswith("Layer 0, head 0")
    # 12 steps for a rotary grouped-query model, then the model's own map and the difference
    charts = page.get_by_test_id("stPlotlyChart")
    expect(charts).to_have_count(14)
    expect(page.locator(".katex").first).to_be_visible()  # formulas typeset
    expect(charts.filter(has_text="Q rotated by position").locator(".main-svg").first).to_be_visible()
    screenshot(page, "from_scratch_top")

    layer = page.get_by_role("combobox", name="Layer")
    layer.click()
    layer.fill("12")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Layer 12, head 0")).to_be_visible()
    wait_for_app_run(page)

    shows = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Layer 12, head 0")
    submit_text(page, HOSTILE, shows)
    probs = charts.filter(has_text="Attention weights")
    expect(probs.locator(".main-svg").first).to_be_visible()
    # the alert was already there before the new text: wait for the redrawn axes, not the old ones
    expect(probs.locator("text").filter(has_text="img").first).to_be_attached(timeout=60_000)
    ticks = " ".join(probs.locator("text").all_text_contents())
    assert "</" in ticks and "img" in ticks  # the token pieces show as text on the axes
    expect(page.locator("img[src='x']")).to_have_count(0)
    probs.scroll_into_view_if_needed()
    screenshot(page, "from_scratch_smollm2")
    assert page.dialogs == []


def test_from_scratch_empty_text_message(page, app_url):
    open_page(page, app_url, "Attention from scratch")
    submit_text(page, "   ", page.get_by_text("The text is empty"))
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(0)
    screenshot(page, "from_scratch_empty_text")


def test_tokens_page_chips_are_text(page, app_url):
    open_page(page, app_url, "Tokens")
    submit_text(page, HOSTILE, page.locator(".tok-chip", has_text="onerror").first)
    chips = page.locator(".tok-chips").first.locator(".tok-chip")
    assert "".join(chips.all_inner_texts()).replace("␣", " ").endswith(HOSTILE)
    expect(page.locator("img[src='x']")).to_have_count(0)
    screenshot(page, "tokens_page_hostile")
    assert page.dialogs == []


def test_positions_and_ffn_pages(page, app_url):
    open_page(page, app_url, "Positions")
    decay = page.get_by_test_id("stPlotlyChart").filter(has_text="after rotation")
    expect(decay.locator(".main-svg").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("base θ = 100000.0")).to_be_visible()
    screenshot(page, "positions_smollm2")
    page.locator('[data-testid="stSidebarNav"] a', has_text="FFN memory").click()
    expect(page.get_by_role("heading", name="FFN memory: how LLMs store facts")).to_be_visible(timeout=60_000)
    wait_for_app_run(page)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # what neurons promote; who pushes a token
    expect(page.get_by_role("heading", name="Which neurons push a token?")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart").filter(has_text="strongest neurons")).to_have_count(1)
    screenshot(page, "ffn_smollm2")
    assert page.dialogs == []
