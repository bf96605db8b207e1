"""The Model page in a real browser: the default model on start, then Gemma loaded from the sidebar."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from explorer.models import zoo
from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e


def card_value(page, prop: str) -> str:
    cells = page.locator('[data-testid="stTable"] tr').filter(
        has=page.locator("td, th", has_text=re.compile(f"^{re.escape(prop)}$"))
    )
    return cells.first.locator("td, th").last.inner_text().strip()


def choose(page, sidebar, label: str, option: str, shows: str) -> None:
    """Picks an option of a sidebar selectbox as a keyboard user does (type to filter, Enter) and waits
    until the rerun has drawn `shows`."""
    combobox = sidebar.get_by_role("combobox", name=label)
    combobox.click()
    combobox.fill(option)
    expect(page.get_by_role("option", name=option)).to_have_count(1)
    page.keyboard.press("Enter")
    expect(sidebar.get_by_text(shows)).to_be_visible()
    expect(combobox).to_have_value(option)
    wait_for_app_run(page)


def load_embedded(page, option: str, shows: str) -> None:
    """Picks an embedded model in the sidebar (see `choose`), presses Load, and waits until the sidebar
    says it is loaded and that run has ended: until then the page can still hold the previous model's
    pictures beside the new ones (a chart found twice)."""
    sidebar = page.get_by_test_id("stSidebar")
    choose(page, sidebar, "Embedded model", option, shows=shows)
    sidebar.get_by_role("button", name="Load", exact=True).click()
    name = next(e.name for e in zoo.ZOO.values() if option == f"{e.title} · {e.family}")
    expect(sidebar.get_by_text(f"Loaded: {name} (embedded)")).to_be_visible(timeout=300_000)
    wait_for_app_run(page)


def test_start_on_smollm2_then_load_gemma(page, app_url):
    page.goto(app_url)
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="smollm2-135m-instruct")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)  # parameters and block diagram
    assert card_value(page, "Key/value heads") == "3"

    sidebar = page.get_by_test_id("stSidebar")
    load_embedded(page, "Gemma 3 270M (base) · decoder", shows="Gemma 3 decoder, 18 layers")
    expect(page.get_by_role("heading", name="gemma-3-270m")).to_be_visible(timeout=300_000)
    wait_for_app_run(page)

    assert card_value(page, "Architecture class") == "Gemma3ForCausalLM"
    assert card_value(page, "Layers") == "18"
    assert card_value(page, "Query heads") == "4"
    assert card_value(page, "Key/value heads") == "1"
    assert card_value(page, "Sliding window") == "512 tokens"
    assert card_value(page, "Attention").startswith("multi-query")
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Decoder block")
    expect(chart.locator(".main-svg").first).to_be_visible()
    texts = chart.locator("text").all_text_contents()
    joined = " ".join(texts)
    assert "Gemma3ForCausalLM: decoder, 18 layers" in joined
    assert "× 18" in joined and "sliding attention (window 512)" in joined
    expect(sidebar.get_by_text("Loaded: gemma-3-270m (embedded)")).to_be_visible()
    screenshot(page, "model_page_gemma")
    assert page.dialogs == []


HOSTILE = "**bold** :red[x] <img src=x onerror=alert(1)>"


def test_hostile_folder_name_shows_as_text(page, app_url, tmp_path):
    from tests.conftest import save_tiny

    folder = save_tiny("gpt2", tmp_path / HOSTILE)
    page.goto(app_url)
    wait_for_app_run(page)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Local folder").click()
    box = sidebar.get_by_role("textbox", name="Folder")
    expect(box).to_be_visible()
    box.fill(str(folder))
    rerun(page, lambda: box.press("Enter"))
    sidebar.get_by_role("button", name="Load", exact=True).click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text(HOSTILE, timeout=60_000)
    expect(sidebar.get_by_text(f"Loaded: {HOSTILE} (folder)")).to_be_visible()
    assert page.locator("img[src=x]").count() == 0
    screenshot(page, "model_page_hostile_name")
    assert page.dialogs == []
