"""A teacher's class in a real browser: each embedded model loaded from the sidebar, one text typed once,
every page visited; no traceback, the same text on every page that reads it, and every page's link names
its model and opens again in a fresh browser, each page's on one of the models in turn (13 links of 52:
each model's and each page's; tests/app/test_links.py checks what a link holds)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from explorer.models import zoo
from tests.e2e.conftest import rerun, screenshot, wait_for_app_run
from tests.e2e.test_model_page import load_embedded

pytestmark = pytest.mark.e2e

# sidebar name -> the page's heading (None: the model's name) and whether it shows the workspace's text
# (None: where the model allows the page's work)
PAGES = {
    "Model": (None, False),
    "Lessons": ("1. Tokens and embeddings", True),
    "Attention": ("Attention", True),
    "Hidden states": ("Hidden states", True),
    "Generate": ("Generate, one token at a time", False),
    "Attention from scratch": ("Attention from scratch", True),
    "Positions": ("Positions", False),
    "Tokens": ("Tokens", True),
    "FFN memory": ("FFN memory: how LLMs store facts", True),
    "Flow": ("Flow", True),
    "Features": ("Features: what a sparse autoencoder reads", None),  # decoders with an SAE: SmolLM2
    "Tasks": ("Tasks", False),
    "Experiments": ("Experiments", None),  # the workspace text, where there is an experiment to run
}
TEXTS = {  # typed once per model, on the Attention page
    "smollm2-135m-instruct": 'The teacher asked why the "sky" is blue, and nobody knew.',
    "date-normalizer": "Monday, 5th May 2025",
    "all-minilm-l6-v2": "The students read the chapter before the class began.",
    "gemma-3-270m": "Rivers carry water from the mountains down to the sea.",
}


def visit(page, name: str, model: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True).click()
    heading = PAGES[name][0] or model
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=120_000)
    wait_for_app_run(page)


def text_box(page):
    return page.get_by_test_id("stMain").get_by_role("textbox", name=re.compile(r"^(Text|Source)")).first


def no_traceback(page, where: str) -> None:
    exceptions = page.get_by_test_id("stException")
    assert exceptions.count() == 0, f"{where}: {exceptions.first.inner_text()[:300]}"


def test_a_class_walks_every_page_on_every_model(page, app_url, browser):
    page.goto(app_url)
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name=zoo.DEFAULT_MODEL)).to_be_visible(timeout=120_000)
    links = []
    for model, text in TEXTS.items():
        entry = zoo.ZOO[model]
        if model != zoo.DEFAULT_MODEL:
            visit(page, "Model", zoo.DEFAULT_MODEL if not links else links[-1][0])
            load_embedded(page, f"{entry.title} · {entry.family}", shows=entry.summary)
            expect(page.get_by_role("heading", name=model)).to_be_visible(timeout=180_000)
            wait_for_app_run(page)
        visit(page, "Attention", model)
        box = text_box(page)
        box.fill(text)
        rerun(page, lambda: box.press("Control+Enter"))
        for name, (_, shows_text) in PAGES.items():
            visit(page, name, model)
            no_traceback(page, f"{model}, {name}")
            if shows_text or (shows_text is None and text_box(page).count()):
                expect(text_box(page)).to_have_value(text)
            links.append((model, name, page.url))
        screenshot(page, f"class_walk_{model}")

    for model, name, url in links:
        assert f"model={model}" in url, f"the link to {name} on {model} does not name the model: {url}"
    models, names = list(TEXTS), list(PAGES)
    other = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
    for model, name, url in links:
        if names.index(name) % len(models) != models.index(model):
            continue
        other.goto(url)
        wait_for_app_run(other)
        heading = PAGES[name][0] or model
        expect(other.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=180_000)
        wait_for_app_run(other)
        no_traceback(other, f"the link to {name} on {model}")
        expect(other.get_by_test_id("stSidebar").get_by_text(f"Loaded: {model} (embedded)")).to_be_visible()
        if PAGES[name][1] or (PAGES[name][1] is None and text_box(other).count()):
            expect(text_box(other)).to_have_value(TEXTS[model])
    other.context.close()
