"""The Model page in a real browser with the embedded encoder-decoder (the date normalizer) chosen in the
sidebar: its card and its encoder-decoder diagram."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import screenshot, wait_for_app_run
from tests.e2e.test_model_page import card_value, load_embedded

pytestmark = pytest.mark.e2e


def test_load_the_date_normalizer(page, app_url):
    page.goto(app_url)
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="smollm2-135m-instruct")).to_be_visible(timeout=120_000)

    load_embedded(
        page, "Date normalizer (T5, trained here) · encoder-decoder", shows="rewrites dates as YYYY-MM-DD"
    )
    sidebar = page.get_by_test_id("stSidebar")
    expect(page.get_by_role("heading", name="date-normalizer")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    expect(sidebar.get_by_text("Loaded: date-normalizer (embedded)")).to_be_visible()

    assert card_value(page, "Family") == "encoder-decoder"
    assert card_value(page, "Architecture class") == "T5ForConditionalGeneration"
    assert card_value(page, "Encoder / decoder layers") == "3 / 1"
    assert card_value(page, "Query heads") == "4"
    assert card_value(page, "Hidden size (d_model)") == "128"
    assert card_value(page, "Vocabulary") == "70"
    assert "weights/date-normalizer" in page.get_by_text("loaded from").first.inner_text()

    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Cross-attention")
    expect(chart.locator(".main-svg").first).to_be_visible()
    joined = " ".join(chart.locator("text").all_text_contents())
    assert "T5ForConditionalGeneration: encoder-decoder, 4 layers" in joined
    assert "Encoder" in joined and "Decoder" in joined and "q from decoder, k/v from encoder" in joined
    screenshot(page, "model_page_date_normalizer")
    assert page.dialogs == []
