"""The Generate page in a real browser on the embedded decoder: five steps, a forced second-ranked
candidate, an undo that leaves a branch."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e


def sequence(page):
    return page.get_by_test_id("stHtml").filter(has_text="capital").first


def click(page, name: str) -> None:
    rerun(page, page.get_by_role("button", name=name, exact=True).click)


def test_step_force_and_undo(page, app_url):
    page.set_viewport_size({"width": 1500, "height": 2200})
    page.goto(f"{app_url}/generate")
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="Generate, one token at a time")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stPlotlyChart").filter(has_text="Next token after")).to_be_visible()
    generated = sequence(page).locator("span[title^='step']")
    for n in range(1, 6):
        click(page, "Step")
        expect(generated).to_have_count(n)
    expect(page.get_by_text("Step 5: chosen token")).to_be_visible()
    screenshot(page, "generate-five-steps")

    second = page.get_by_role("button", name="2. ", exact=False).first
    forced = second.inner_text().split(". ", 1)[1]
    rerun(page, second.click)
    expect(generated).to_have_count(6)
    expect(page.get_by_text("How: picked by you. Rank 2")).to_be_visible()
    assert generated.nth(5).inner_text() == forced  # the second-ranked candidate is now in the text
    screenshot(page, "generate-forced-second")

    page.get_by_role("combobox", name="Undo back to").click()
    rerun(page, page.get_by_role("option", name="after step 3").click)
    click(page, "Undo")
    expect(generated).to_have_count(3)
    tree = page.get_by_test_id("stPlotlyChart").filter(has_text="branches you undid")
    expect(tree).to_be_visible()
    screenshot(page, "generate-undone")
    assert page.dialogs == []


def test_steering_shows_both_distributions(page, app_url):
    query = urlencode({"model": "smollm2-135m-instruct", "prompt": "I think that you are", "chat": "0",
                       "steer": "1", "steer_plus": "I love you", "steer_minus": "I hate you",
                       "steer_layer": "6", "steer_coef": "2"})  # fmt: skip
    page.goto(f"{app_url}/generate?{query}")
    wait_for_app_run(page)
    steered = page.locator(".gtitle", has_text="The same candidates, steered and not (layer 6, × 2)")
    expect(steered).to_have_count(1, timeout=120_000)
    expect(page.locator(".gtitle", has_text="Next token after 5 tokens")).to_have_count(1)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(page.locator(".gtitle", has_text="Next token after 6 tokens")).to_have_count(1, timeout=60_000)
    wait_for_app_run(page)
    expect(page.get_by_text(re.compile(r"^Without steering the most likely would be"))).to_be_visible()
    expect(page).to_have_url(re.compile(r"steer_coef=2"))
    assert page.get_by_test_id("stException").count() == 0
    steered.scroll_into_view_if_needed()
    screenshot(page, "generate-steering")


def test_each_generated_token_is_attributed_and_a_step_adds_a_row(page, app_url):
    query = urlencode({"model": "smollm2-135m-instruct", "prompt": "The Eiffel Tower is in the city of",
                       "chat": "0", "attribute": "1", "picks": "7042,30,198"})  # fmt: skip
    page.goto(f"{app_url}/generate?{query}")
    wait_for_app_run(page)
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Input × gradient: each generated token")
    expect(chart).to_have_count(1, timeout=120_000)
    expect(chart.locator(".ytick", has_text="1: ␣Paris")).to_have_count(1)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(page.locator(".gtitle", has_text="Next token after 13 tokens")).to_have_count(1, timeout=60_000)
    expect(chart.locator(".ytick", has_text=re.compile(r"^4: "))).to_have_count(1, timeout=60_000)
    wait_for_app_run(page)
    assert page.get_by_test_id("stException").count() == 0
    chart.scroll_into_view_if_needed()
    screenshot(page, "generate-attribution")
