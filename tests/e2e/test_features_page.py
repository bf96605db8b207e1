"""The Features page in a real browser on SmolLM2 and its SAE: the features of each token, a feature's
dashboard with its top contexts, and steering generation with that feature."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e
TEXT = "def forward(self, hidden_states): return the tensor of shape (batch, seq_len)"


def test_features_of_a_text_a_dashboard_and_steering_with_it(page, app_url):
    page.set_viewport_size({"width": 1500, "height": 3000})
    page.goto(f"{app_url}/features?{urlencode({'model': 'smollm2-135m-instruct', 'text': TEXT})}")
    wait_for_app_run(page)
    main = page.get_by_test_id("stMain")
    expect(main.locator(".gtitle", has_text="The strongest features of the text")).to_have_count(
        1, timeout=180_000
    )
    expect(main.locator(".gtitle", has_text="Features firing on")).to_have_count(1)
    expect(main.locator(".gtitle", has_text="Tokens it promotes")).to_have_count(1)
    expect(main.get_by_text("Where it fires most on the training text")).to_be_visible()
    expect(page).to_have_url(re.compile(r"feature=\d+"))
    feature = int(re.search(r"feature=(\d+)", page.url).group(1))
    shaded = main.get_by_test_id("stHtml").filter(has_text=re.compile(r"\d\.\d\d")).first
    expect(shaded).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "features")
    rerun(page, main.get_by_role("button", name=f"Steer generation with feature #{feature}").click)
    expect(page.get_by_role("heading", name="Generate, one token at a time")).to_be_visible(timeout=60_000)
    paired = page.locator(".gtitle", has_text=f"steered and not (+ 8 × feature #{feature} at layer 15)")
    expect(paired).to_have_count(1, timeout=120_000)
    expect(page).to_have_url(re.compile(rf"feature_steer=1.*steer_feature={feature}"))
    assert page.get_by_test_id("stException").count() == 0
    paired.scroll_into_view_if_needed()
    screenshot(page, "generate-feature-steering")
