"""The Tasks page in a real browser: sentence similarity on the embedded MiniLM encoder, chat on SmolLM2."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot, wait_for_app_run
from tests.e2e.test_model_page import load_embedded

pytestmark = pytest.mark.e2e


def open_tasks(page) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Tasks").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible(timeout=60_000)
    wait_for_app_run(page)


def pick_task(page, option: str) -> None:
    box = page.get_by_role("combobox", name="Task", exact=True)
    box.click()
    box.fill(option[2:])
    expect(page.get_by_role("option", name=option)).to_have_count(1)
    page.keyboard.press("Enter")
    expect(box).to_have_value(option)
    wait_for_app_run(page)


def test_similarity_on_minilm(page, app_url):
    page.goto(app_url)
    wait_for_app_run(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Loaded: smollm2-135m-instruct")).to_be_visible(timeout=120_000)
    load_embedded(page, "all-MiniLM-L6-v2 · encoder", shows="BERT encoder, 6 layers")
    expect(sidebar.get_by_text("Loaded: all-minilm-l6-v2 (embedded)")).to_be_visible(timeout=120_000)
    open_tasks(page)
    pick_task(page, "✓ Sentence similarity")
    expect(page.get_by_text(re.compile("^How: mean pooling.*as sentence-transformers does"))).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Cosine similarity")
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=60_000)
    wait_for_app_run(page)
    cells = [t.strip() for t in chart.locator("text").all_text_contents()]
    assert cells.count("1.00") == 5  # the diagonal of five sentences
    ticks = " ".join(cells)
    assert "1. A man is eating food." in ticks and "5. A monkey is playing drums." in ticks
    values = [float(c) for c in cells if re.fullmatch(r"-?\d\.\d\d", c)]
    assert len(values) == 25 and all(-1 <= v <= 1 for v in values)
    # the two meals are the most similar pair of different sentences (the matrix is symmetric: each twice)
    off_diagonal = sorted(v for v in values if v != 1.0)
    assert off_diagonal[-1] == off_diagonal[-2] and off_diagonal[-1] > 0.5
    screenshot(page, "tasks_similarity_minilm")
    assert page.dialogs == []


def test_chat_on_smollm2(page, app_url):
    page.goto(app_url)
    wait_for_app_run(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Loaded: smollm2-135m-instruct")).to_be_visible(timeout=120_000)
    open_tasks(page)
    pick_task(page, "✓ Chat")
    box = page.get_by_role("textbox", name="Your message")
    box.fill("What is the capital of France?")
    page.get_by_role("button", name="Send", exact=True).click()
    messages = page.get_by_test_id("stChatMessage")
    expect(messages).to_have_count(2, timeout=180_000)
    wait_for_app_run(page)
    expect(messages.nth(0)).to_contain_text("What is the capital of France?")
    reply = messages.nth(1).inner_text()
    assert "Paris" in reply
    expect(page.get_by_text(re.compile(r"new tokens \(greedy.*ms per token"))).to_be_visible()
    expect(box).to_have_value("")
    screenshot(page, "tasks_chat_smollm2")
    assert page.dialogs == []
