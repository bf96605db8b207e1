"""The Attention page in a real browser: the embedded decoder and encoder, the grid, one head opened
from it, bertviz's view drawn offline, and a hostile text shown as text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from bench.attention import PROSE
from tests.e2e.conftest import rerun, screenshot, wait_for_app_run
from tests.e2e.test_model_page import load_embedded

pytestmark = pytest.mark.e2e

LONG_TEXT = PROSE * 24  # about 1,500 tokens
HOSTILE = "</script><b>x</b> <img src=x onerror=alert(1)> it"


def open_attention(page, app_url):
    page.set_viewport_size({"width": 1500, "height": 2400})
    page.goto(f"{app_url}/attention")
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="Attention", exact=True)).to_be_visible(timeout=120_000)


def chart(page, text: str):
    return page.get_by_test_id("stPlotlyChart").filter(has_text=text)


def pick_view(page, name: str) -> None:
    rerun(page, page.get_by_test_id("stButtonGroup").get_by_text(name, exact=True).click)


def bertviz_frame(page):
    return page.frame_locator('[data-testid="stIFrame"]')


def test_decoder_grid_opens_a_head_and_bertviz_draws(page, app_url):
    open_attention(page, app_url)
    expect(chart(page, "layer 0, head 0")).to_be_visible()
    expect(chart(page, "␣cat")).to_have_count(1)  # the tokens on the axes, readable
    screenshot(page, "attention-one-head")

    pick_view(page, "All heads")
    grid = chart(page, "30 layers × 9 heads")
    expect(grid).to_be_visible()
    expect(grid.locator("image")).to_have_count(1)  # every thumbnail in one picture
    # click the thumbnail of layer 2, head 4 (markers are in layer-major order, 9 heads a row)
    marker = grid.locator(".scatterlayer .point").nth(2 * 9 + 4)
    box = marker.bounding_box()
    screenshot(page, "attention-grid")
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(chart(page, "layer 2, head 4")).to_be_visible(timeout=30_000)
    # another view chosen at once, while that run may still be finishing, stays chosen (the browser
    # resent the grid's selection, which reopened the head: 4 runs in 4 before the fix)
    pick_view(page, "Head statistics")
    expect(chart(page, "Entropy (bits)")).to_be_visible(timeout=30_000)
    pick_view(page, "One head")
    expect(chart(page, "layer 2, head 4")).to_be_visible(timeout=30_000)
    screenshot(page, "attention-opened-from-grid")

    pick_view(page, "bertviz")
    frame = bertviz_frame(page)
    expect(frame.locator("svg text").filter(has_text="␣cat").first).to_be_visible(timeout=30_000)
    expect(frame.locator("#layer option")).to_have_count(1)  # only the chosen layer was sent
    screenshot(page, "attention-bertviz-head")

    pick_view(page, "Token focus")
    expect(chart(page, "How much “␣it” (7) attends to")).to_be_visible()
    pick_view(page, "Head statistics")
    expect(chart(page, "Entropy (bits)")).to_be_visible()
    assert page.dialogs == []


def test_hostile_text_is_shown_as_text_everywhere(page, app_url):
    open_attention(page, app_url)
    box = page.get_by_label("Text")
    box.fill(HOSTILE)
    rerun(page, lambda: box.press("Control+Enter"))
    chips = page.locator('[data-testid="stHtml"]')
    expect(chips.get_by_text("</", exact=True).first).to_be_visible(timeout=60_000)
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("[data-testid='stMain'] b").filter(has_text="x").count() == 0
    ticks = chart(page, "layer 0, head 0").locator(".xtick text")
    expect(ticks.filter(has_text="</").first).to_be_attached()  # the token text on the heatmap's axes
    expect(ticks.filter(has_text="img")).to_have_count(1)
    screenshot(page, "attention-hostile-one-head")

    pick_view(page, "All heads")
    expect(chart(page, "30 layers × 9 heads")).to_be_visible()
    pick_view(page, "bertviz")
    frame = bertviz_frame(page)
    expect(frame.locator("svg text").filter(has_text="img").first).to_be_visible(timeout=30_000)
    expect(frame.locator("svg text").filter(has_text="</").first).to_be_visible()
    assert frame.locator('img[src="x"]').count() == 0
    assert frame.locator("b").count() == 0
    rerun(page, page.get_by_text("Model view (every head)").click)
    expect(frame.locator("svg").first).to_be_visible(timeout=30_000)
    screenshot(page, "attention-hostile-bertviz-model")
    assert page.dialogs == []


def test_encoder_attention(page, app_url):
    open_attention(page, app_url)
    load_embedded(page, "all-MiniLM-L6-v2 · encoder", shows="BERT encoder, 6 layers")
    wait_for_app_run(page)
    expect(chart(page, "Self-attention: layer 0, head 0")).to_be_visible(timeout=120_000)
    expect(chart(page, "[CLS]")).to_have_count(1)
    pick_view(page, "All heads")
    expect(chart(page, "6 layers × 12 heads")).to_be_visible()
    screenshot(page, "attention-encoder-grid")
    assert page.dialogs == []


def test_date_normalizer_cross_attention(page, app_url):
    """The embedded encoder-decoder: its output's year digits look at the input's year."""
    open_attention(page, app_url)
    load_embedded(
        page, "Date normalizer (T5, trained here) · encoder-decoder", shows="rewrites dates as YYYY-MM-DD"
    )
    wait_for_app_run(page)
    expect(page.get_by_label("Source (the encoder's input)")).to_have_value("Tuesday, 23rd November 2026")
    expect(page.get_by_text("Decoder input (the model's own greedy output)")).to_be_visible(timeout=60_000)
    # the decoder read its own output: 2026-11-23, one character a token
    decoder_chips = (
        page.locator('[data-testid="stHtml"] div').filter(has_text="Decoder input").locator("span")
    )
    assert "".join(decoder_chips.all_inner_texts()) == "<pad>2026-11-23</s>"
    pick_view(page, "Mean and rollout")
    mean = chart(page, "Cross-attention (decoder → encoder): layer 0, mean over heads")
    expect(mean).to_be_visible()
    screenshot(page, "attention-date-cross-mean")
    pick_view(page, "All heads")
    expect(chart(page, "1 layers × 4 heads")).to_be_visible()
    rerun(page, page.get_by_test_id("stButtonGroup").get_by_text("Encoder self-attention", exact=True).click)
    expect(chart(page, "3 layers × 4 heads")).to_be_visible()
    assert page.dialogs == []


def test_switching_to_gemma_keeps_the_page_working(page, app_url):
    """Gemma's layer labels name its sliding windows; the layer chosen under SmolLM2 must not break the
    page when a long text is then run (Streamlit handed the old label back as a string)."""
    open_attention(page, app_url)
    expect(chart(page, "layer 0, head 0")).to_be_visible()
    load_embedded(page, "Gemma 3 270M (base) · decoder", shows="Gemma 3 decoder, 18 layers")
    wait_for_app_run(page)
    expect(chart(page, "(sliding window 512)")).to_be_visible(timeout=300_000)
    box = page.get_by_label("Text")
    box.fill(LONG_TEXT)
    rerun(page, lambda: box.press("Control+Enter"))
    expect(page.get_by_text("tokens the model read")).to_be_visible(timeout=300_000)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "attention-gemma")


def test_induction_heads_are_found_on_a_probe(page, app_url):
    page.goto(f"{app_url}/attention?model=smollm2-135m-instruct&view=Head+statistics")
    wait_for_app_run(page)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Find heads by what they do")).to_be_visible(timeout=120_000)
    expect(main.locator(".gtitle", has_text="Induction: from a token")).to_have_count(1, timeout=60_000)
    expect(main.locator(".gtitle", has_text="Layer 18, head 6 on the probe")).to_have_count(1)
    pattern = main.get_by_role("combobox", name="Pattern")
    pattern.click()
    pattern.fill("Previous token")  # the list opens on what is typed
    previous = page.get_by_role("option", name="Previous token: attends to the token just before")
    rerun(page, previous.click)
    expect(main.locator(".gtitle", has_text="Previous token: attends")).to_have_count(1, timeout=60_000)
    expect(page).to_have_url(re.compile(r"detect=previous"))  # a copied link opens this pattern
    assert page.get_by_test_id("stException").count() == 0
    main.locator(".gtitle", has_text="Previous token: attends").scroll_into_view_if_needed()
    screenshot(page, "attention-find-heads")


def test_a_drawn_pattern_finds_heads_and_a_tick_rescores_them(page, app_url):
    """A link opens the user's own pattern (ticked cells) on the workspace text; ticking one more cell in
    the grid rescores every head and the address bar carries the new pattern."""
    text = "When Mary and John went to the store, John gave a drink to"
    page.set_viewport_size({"width": 1500, "height": 4000})
    page.goto(f"{app_url}/attention?model=smollm2-135m-instruct&view=Head+statistics&detect=pattern"
              f"&pattern=13:1;9:3&text={text.replace(' ', '+')}")  # fmt: skip
    wait_for_app_run(page)
    main = page.get_by_test_id("stMain")
    expect(main.locator(".gtitle", has_text="Your pattern (2 cells) on the workspace text")).to_have_count(
        1, timeout=120_000
    )
    grid = main.get_by_test_id("stDataFrame")
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    # a cell's centre: the index column (about 66 px wide here), then 75 px per key, 35 px per row
    page.mouse.click(box["x"] + 66 + 0.5 * 75, box["y"] + 35 + 5.5 * 35)  # query 5 (" to"), key 0
    expect(page).to_have_url(re.compile(r"pattern=5%3A0%3B9%3A3%3B13%3A1"), timeout=60_000)
    expect(main.locator(".gtitle", has_text="Your pattern (3 cells) on the workspace text")).to_have_count(
        1, timeout=60_000
    )
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "attention-drawn-pattern")
