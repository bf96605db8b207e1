"""More of what a class saw go wrong, each checked in a real browser: the date normalizer's cross-attention
read one row off and bertviz opened on the wrong kind; a passing from-scratch check drawn red; an entropy
reference that ignored the causal mask; Step and Run left disabled after an undo; 100000 steps refused
with a red mark and no reason; SmolLM2's first token drowning the norms; a character split across tokens
shown as bytes."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e


def go(page, app_url: str, path: str, **params) -> None:
    page.goto(f"{app_url}/{path}?{urlencode(params)}")
    wait_for_app_run(page)


def chart(page, title: str):
    found = page.get_by_test_id("stPlotlyChart").filter(has_text=title).first
    try:
        expect(found.locator(".main-svg").first).to_be_visible(timeout=120_000)
    except AssertionError:
        screenshot(page, f"missing_{title[:20]}")
        raise
    return found


def test_the_date_normalizers_cross_attention_reads_right(page, app_url):
    go(page, app_url, "attention", model="date-normalizer", kind="cross", view="One head")
    rows = " ".join(chart(page, "Cross-attention").locator("text").all_text_contents())
    assert "<pad> → 2" in rows  # the row that writes "2", named by what it writes
    go(page, app_url, "attention", model="date-normalizer", kind="cross", view="bertviz")
    frame = page.frame_locator("iframe").first
    expect(frame.locator("#filter")).to_have_value("2", timeout=60_000)  # cross-attention, as the page says
    screenshot(page, "bug_bertviz_cross")


def test_pictures_that_read_right_on_smollm2(page, app_url):
    go(page, app_url, "from_scratch", model="smollm2-135m-instruct")
    expect(page.get_by_test_id("stMetricValue").first).to_have_text(re.compile(r"^0\.000e\+00$"))
    diff = chart(page, "from scratch −")
    ticks = " ".join(diff.locator("text").all_text_contents())
    assert "10µ" in ticks or "10μ" in ticks  # a scale up to the tolerance: an exact match is white

    go(page, app_url, "attention", model="smollm2-135m-instruct", view="Head statistics", stat="entropy")
    caption = page.get_by_text(re.compile("^For reference: attention spread evenly"))
    expect(caption).to_be_visible(timeout=60_000)
    assert "query i reads the i + 1 keys" in caption.inner_text()

    go(page, app_url, "hidden_states", model="smollm2-135m-instruct")
    expect(page.get_by_text(re.compile(r"^One cell is [\d,]+ times the median"))).to_be_visible()
    page.get_by_text("Log colour scale", exact=True).click()
    expect(chart(page, "L2 norm").locator("text").filter(has_text="norm (log)")).to_have_count(1)


def test_generate_after_the_end_and_past_the_limit(page, app_url):
    go(page, app_url, "generate", model="smollm2-135m-instruct", prompt="Hebrew: שלום", chat="0")
    text = page.locator('[data-testid="stHtml"]').filter(has_text="Hebrew")
    joined = text.locator('span[title^="one character, its bytes in tokens"]')
    expect(joined.first).to_be_visible(timeout=60_000)
    assert "\\x" not in text.inner_text()

    go(page, app_url, "generate", model="smollm2-135m-instruct")  # the chat question: ends within 10 tokens
    page.get_by_role("button", name="Run 10 steps").click()
    expect(page.get_by_role("button", name="Step", exact=True)).to_be_disabled(timeout=120_000)
    wait_for_app_run(page)
    undo_to = page.get_by_role("combobox", name="Undo back to")
    undo_to.click()
    rerun(page, page.get_by_role("option", name="the prompt (step 0)").click)
    page.get_by_role("button", name="Undo", exact=True).click()
    expect(page.get_by_role("button", name="Step", exact=True)).to_be_enabled(timeout=60_000)
    expect(page.get_by_role("button", name="Run 10 steps")).to_be_enabled()

    steps = page.locator('[data-testid="stNumberInput"] input').last
    steps.fill("100000")
    steps.press("Enter")
    expect(page.get_by_text("At most 256 steps per run (100,000 asked for).")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Run 256 steps")).to_be_visible()
    screenshot(page, "bug_generate_limit")
