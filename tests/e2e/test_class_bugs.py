"""What a class saw go wrong, walked again in a real browser on the default model (SmolLM2)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run
from tests.e2e.test_from_scratch import open_page

pytestmark = pytest.mark.e2e


def send(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Text")
    box.fill(text)
    rerun(page, lambda: box.press("Control+Enter"))


def test_ffn_memory_takes_a_second_text(page, app_url):
    """Hello world, then a longer sentence: it raised a TypeError that stayed on the page."""
    open_page(page, app_url, "FFN memory")
    rerun(page, page.get_by_role("button", name="Example: a fact to recall").click)
    token = page.get_by_role("combobox", name="Token")
    expect(token).to_have_value("8: ␣of")  # the token whose next word is " Paris"
    send(page, "Hello world")
    expect(token).to_have_value("1: ␣world")
    sentence = "Teachers in the class asked the model a much longer question than before"
    send(page, sentence)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(token).to_have_value(re.compile(r"\d+: ␣before"))  # the new text's last token
    expect(page.get_by_test_id("stPlotlyChart").filter(has_text="strongest neurons")).to_be_visible()
    screenshot(page, "ffn_second_text")


def test_quotes_and_end_of_text_tokens_show_as_text_in_the_logit_lens(page, app_url):
    page.goto(f"{app_url}/hidden_states?hidden=Logit+lens")
    wait_for_app_run(page)
    send(page, 'She said "hello" to me')
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Logit lens")
    expect(chart.locator("text").filter(has_text='␣"').first).to_be_attached(timeout=60_000)
    text = " ".join(chart.locator("text").all_text_contents())
    assert "&quot;" not in text and '"' in text
    screenshot(page, "logit_lens_quotes")
