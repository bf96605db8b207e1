"""The Experiments page in a real browser, on the default embedded decoder (SmolLM2): a head scan of all
270 heads, then activation patching of the Eiffel Tower / Colosseum pair."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run
from tests.e2e.test_from_scratch import open_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTILE = "The </script><b>x</b> <img src=x onerror=alert(1)> is"


def test_head_scan_and_patching_on_smollm2(page, app_url):
    open_page(page, app_url, "Experiments")
    example = page.get_by_role("button", name="Example: a fact to recall")  # the Eiffel Tower and ' Paris'
    rerun(page, example.click)
    expect(page.get_by_test_id("stMain").get_by_role("textbox", name="Text")).to_have_value(
        "The Eiffel Tower is in the city of"
    )
    charts = page.get_by_test_id("stPlotlyChart")
    bars = charts.filter(has_text="Next-token probabilities before and after")
    # the chart of the text before the example stays on screen until the rerun draws the new one: wait for
    # the new text's prediction rather than for any chart (a fresh clone's run read the old chart)
    expect(bars.filter(has_text="␣Paris")).to_have_count(1, timeout=60_000)  # the old one may linger a moment
    wait_for_app_run(page)
    expect(bars).to_have_count(1)

    page.get_by_role("button", name="Scan all 270 heads").click()
    scan = charts.filter(has_text="when one head is knocked out")
    expect(scan.locator(".main-svg").first).to_be_visible(timeout=300_000)
    wait_for_app_run(page)
    ticks = scan.locator("text").all_text_contents()
    assert "L29" in ticks and "H8" in ticks  # 30 layers x 9 heads
    table = page.get_by_test_id("stDataFrame")
    expect(table).to_have_count(1)
    scan.scroll_into_view_if_needed()
    screenshot(page, "experiments_head_scan")

    page.get_by_test_id("stRadio").get_by_text("Activation patching").click()
    expect(page.get_by_role("textbox", name="Clean prompt")).to_be_visible(timeout=60_000)
    wait_for_app_run(page)
    corrupt = page.get_by_role("textbox", name="Corrupted prompt (same number of tokens)")
    corrupt.fill(HOSTILE)
    corrupt.press("Enter")
    error = page.get_by_test_id("stAlertContentError").filter(has_text="The clean prompt is 9 tokens")
    expect(error).to_be_visible(timeout=60_000)
    shown = error.inner_text()
    assert "corrupted one 23" in shown and "</" in shown and "img" in shown  # the tokens show as text
    expect(page.locator("img[src='x']")).to_have_count(0)
    corrupt.fill("The Colosseum is in the city of")
    corrupt.press("Enter")
    button = page.get_by_role("button", name="Patch 810 (layer, position) activations")
    expect(button).to_be_visible(timeout=60_000)
    wait_for_app_run(page)
    button.click()
    heatmaps = charts.filter(has_text="Restored share")
    expect(heatmaps).to_have_count(3, timeout=400_000)
    wait_for_app_run(page)
    first = heatmaps.first
    expect(first.locator(".main-svg").first).to_be_visible()
    ticks = " ".join(first.locator("text").all_text_contents())
    assert "␣Col" in ticks and "osse" in ticks and "L29" in ticks
    expect(page.get_by_text("clean 2.857", exact=False)).to_be_visible()
    first.scroll_into_view_if_needed()
    screenshot(page, "experiments_patching")
    page.get_by_text("Beside it, attribution patching").click()  # the gradient approximation beside
    expect(charts.filter(has_text="approximated")).to_have_count(3, timeout=120_000)
    wait_for_app_run(page)
    expect(
        page.get_by_text(re.compile("correlation of the approximation with exact patching"))
    ).to_have_count(3)
    charts.filter(has_text="approximated").first.scroll_into_view_if_needed()
    screenshot(page, "experiments_attribution_patching")
    assert page.dialogs == []


def test_compare_smollm2_with_gemma_and_routing_message(page, app_url):
    open_page(page, app_url, "Experiments")
    page.get_by_test_id("stRadio").get_by_text("Compare two models").click()
    load = page.get_by_role("button", name="Load second model")
    expect(load).to_be_visible(timeout=60_000)
    wait_for_app_run(page)
    load.click()  # the default second model: Gemma 3 270M
    charts = page.get_by_test_id("stPlotlyChart")
    bars = charts.filter(has_text="Next-token probabilities, matched by the token's text")
    expect(bars.locator(".main-svg").first).to_be_visible(timeout=300_000)
    wait_for_app_run(page)
    legend = " ".join(bars.locator("text").all_text_contents())
    assert "smollm2-135m-instruct" in legend and "gemma-3-270m" in legend and "␣Paris" in legend
    maps = charts.filter(has_text="layer 0, head 0")
    expect(maps).to_have_count(2)
    expect(page.get_by_text("Loaded: smollm2-135m-instruct (embedded)")).to_be_visible()  # still the user's
    screenshot(page, "experiments_compare")

    page.get_by_test_id("stRadio").get_by_text("Expert routing").click()
    expect(page.get_by_text("this model has no experts")).to_be_visible(timeout=60_000)
    assert page.dialogs == []


def test_direct_logit_attribution_of_paris_against_rome(page, app_url):
    query = urlencode({"model": "smollm2-135m-instruct", "experiment": "Direct logit attribution",
                       "text": "The Eiffel Tower is in the city of", "dla_target": " Paris",
                       "dla_foil": " Rome"})  # fmt: skip
    page.goto(f"{app_url}/experiments?{query}")
    wait_for_app_run(page)
    main = page.get_by_test_id("stMain")
    title = main.locator(".gtitle", has_text="Heads: direct effect on logit(␣Paris) − logit(␣Rome)")
    expect(title).to_have_count(1, timeout=120_000)
    metrics = main.get_by_test_id("stMetricValue")
    own, total = (float(metrics.nth(i).inner_text()) for i in range(2))
    assert own == total and own > 0  # shown to 4 decimals: equal
    assert page.get_by_test_id("stException").count() == 0
    main.locator(".gtitle", has_text="Each block's direct effect").scroll_into_view_if_needed()
    screenshot(page, "experiments_dla")


def test_input_attribution_of_paris(page, app_url):
    query = urlencode({"model": "smollm2-135m-instruct", "experiment": "Input attribution",
                       "text": "The Eiffel Tower is in the city of", "dla_target": " Paris"})  # fmt: skip
    page.goto(f"{app_url}/experiments?{query}")
    wait_for_app_run(page)
    main = page.get_by_test_id("stMain")
    title = main.locator(".gtitle", has_text="What the prediction of ␣Paris comes from")
    expect(title).to_have_count(1, timeout=180_000)
    expect(main.get_by_text(re.compile(r"^Integrated gradients: the scores add up to"))).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    title.scroll_into_view_if_needed()
    screenshot(page, "experiments_input_attribution")
