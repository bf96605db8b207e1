"""The Lessons page in presentation mode, as a class would follow it: on each embedded model, every
lesson's three screens reached with the arrow keys; every question answered right (with the answer the
page reveals), the first one wrong before, and the verdicts checked; a lesson that does not apply says why
and offers a model."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from explorer.lessons import course
from explorer.models import zoo
from tests.e2e.conftest import rerun, screenshot, wait_for_app_run

pytestmark = pytest.mark.e2e
SHOTS = os.environ.get("LESSON_SHOTS") == "1"


def main(page):
    return page.get_by_test_id("stMain")


ARROWS = {"ArrowRight": "Next", "ArrowLeft": "Previous"}  # the key, the button it is the shortcut of


def press(page, key: str, shows) -> None:
    """Presses `key` on the page (not in a box), waits for `shows` (a locator: the screen it leads to), then
    for the page's run to end. Pressed at once, as a teacher does: an arrow that appears mid-run must work.
    But not before its button is on the page, as the teacher sees it: on a freshly opened page the arrows
    come 0.2 to 1 s after the lesson's first lines and the "(1/3)" beside them (Streamlit's frontend loads
    the buttons' code, a file of its own, only then), and a key pressed before has no button to press."""
    arrow = main(page).get_by_role("button", name=re.compile(ARROWS[key]))
    expect(arrow).to_be_visible(timeout=60_000)
    page.evaluate("document.activeElement && document.activeElement.blur()")  # keys go to the page
    page.keyboard.press(key)
    expect(shows).to_be_visible(timeout=120_000)
    wait_for_app_run(page)


def revealed(page) -> str:
    rerun(page, main(page).get_by_role("button", name="Show the answer").click)
    info = main(page).get_by_test_id("stAlertContentInfo").filter(has_text="Answer:")
    expect(info).to_be_visible()
    return re.search(r"Answer:\s*(.+)", info.inner_text()).group(1).strip()


def answer(page, kind: str, value: str, options: list[str] | None = None) -> None:
    """Puts `value` in the answer box (for a choice of many, the options it names) and presses Check."""
    m = main(page)
    if kind == "choice":
        m.get_by_test_id("stRadio").get_by_text(value, exact=True).click()
    elif kind == "many":
        chosen = set(value.split(", "))
        group = m.get_by_test_id("stButtonGroup")
        for name in options:
            button = group.get_by_role("button", name=name, exact=True)
            on = button.get_attribute("aria-pressed") == "true" or "Active" in (
                button.get_attribute("data-testid") or ""
            )
            if (name in chosen) != on:
                button.click()
    else:
        m.get_by_label(re.compile("^Your answer")).fill(value)
    rerun(page, m.get_by_role("button", name="Check").click)


def wrong_value(kind: str, right: str, options: list[str]) -> str:
    if kind == "choice":
        return next(o for o in options if o != right)
    if kind == "many":
        chosen = right.split(", ")
        return ", ".join(chosen[:-1] or [o for o in options if o not in chosen][:1])
    return str(float(right.replace(",", "")) + 1.0)


@pytest.mark.parametrize("model", list(zoo.ZOO))
def test_every_lesson_in_presentation_mode(page, app_url, model):
    page.goto(f"{app_url}/lessons?model={model}&lesson={course.LESSONS[0].id}&present=1&screen=0")
    wait_for_app_run(page)
    wrong_once = True
    for n, lesson in enumerate(course.LESSONS, 1):
        title = f"{n}. {lesson.title}"
        expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=120_000)
        expect(page.get_by_test_id("stSidebar")).to_be_hidden()  # presentation: the sidebar is out of the way
        expect(main(page).get_by_text("(1/3)")).to_be_visible()
        press(page, "ArrowRight", main(page).get_by_text("(2/3)"))
        assert page.get_by_test_id("stException").count() == 0, f"{model} {lesson.id}"
        if SHOTS:  # every lesson's screens, for a person to look at (make shots)
            screenshot(page, f"lesson-{model}-{lesson.id}-model")
        press(page, "ArrowRight", main(page).get_by_text("(3/3)"))
        offer = main(page).get_by_role("button", name=re.compile(r"^Load .* for this lesson$"))
        check = main(page).get_by_role("button", name="Check")
        expect(offer.or_(check)).to_be_visible(timeout=120_000)
        if offer.count():  # the lesson does not apply: it says why, and offers a model
            assert lesson.instead is not None, f"{lesson.id} offers a model but names none"
            expect(offer).to_have_text(f"Load {zoo.ZOO[lesson.instead].title} for this lesson")
        else:
            radios = main(page).get_by_test_id("stRadio")
            pills = main(page).get_by_test_id("stButtonGroup")
            # the Check button can be on screen before the answer box beside it: wait for the box, then
            # read its kind (a fresh clone's run read a choice of heads as a number box)
            wait_for_app_run(page)
            expect(radios.or_(pills).or_(main(page).get_by_test_id("stTextInput")).first).to_be_visible()
            kind = "choice" if radios.count() else "many" if pills.count() else "number"
            options = []
            if kind == "choice":
                options = [t.strip() for t in radios.locator("label").all_inner_texts() if t.strip()]
                options = [o for o in options if o != "Your answer"]
            elif kind == "many":
                options = [t.strip() for t in pills.get_by_role("button").all_inner_texts()]
            right = revealed(page)
            if wrong_once:
                answer(page, kind, wrong_value(kind, right, options), options)
                expect(main(page).get_by_text("Not quite.")).to_be_visible()
            answer(page, kind, right, options)
            expect(main(page).get_by_text(re.compile(r"^Right\."))).to_be_visible()
            if wrong_once:
                screenshot(page, f"lesson-{model}-{lesson.id}-question")
                wrong_once = False
        if n < len(course.LESSONS):
            following = f"{n + 1}. {course.LESSONS[n].title}"
            press(page, "ArrowRight", page.get_by_role("heading", name=following, exact=True))
    assert page.get_by_test_id("stException").count() == 0


def test_a_lesson_that_does_not_apply_offers_its_model_one_click_away(page, app_url):
    page.goto(f"{app_url}/lessons?model={zoo.DEFAULT_MODEL}&lesson=cross-attention")
    wait_for_app_run(page)
    expect(main(page).get_by_text("it has no cross-attention")).to_be_visible(timeout=120_000)
    dates = zoo.ZOO["date-normalizer"]
    main(page).get_by_role("button", name=f"Load {dates.title} for this lesson").click()
    expect(page.get_by_test_id("stSidebar").get_by_text("Loaded: date-normalizer")).to_be_visible(
        timeout=120_000
    )
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="6. Cross-attention", exact=True)).to_be_visible()
    expect(main(page).get_by_text("Question.")).to_be_visible()
    expect(main(page).get_by_role("radio")).not_to_have_count(0)  # the source tokens to choose from
    screenshot(page, "lesson-offered-model")


def test_a_teachers_link_opens_the_lesson_model_text_and_screen(page, app_url):
    text = "Rivers carry water from the mountains down to the sea."
    page.goto(f"{app_url}/lessons?model=gemma-3-270m&lesson=masks&present=1&screen=1&text={text}")
    wait_for_app_run(page)
    expect(
        page.get_by_role("heading", name="5. Encoder, decoder, encoder-decoder", exact=True)
    ).to_be_visible(timeout=120_000)
    expect(main(page).get_by_text(f"gemma-3-270m · “{text}”")).to_be_visible()
    expect(main(page).get_by_text("(2/3)")).to_be_visible()
    expect(main(page).get_by_test_id("stPlotlyChart")).to_have_count(2)  # the model's map, the three families
    press(page, "ArrowLeft", main(page).get_by_text("(1/3)"))
    press(page, "ArrowLeft", page.get_by_role("heading", name="4. Where is each token?", exact=True))
    expect(main(page).get_by_text("(3/3)")).to_be_visible()
    rerun(page, main(page).get_by_role("button", name="Leave presentation mode").click)
    expect(page.get_by_test_id("stSidebar")).to_be_visible()
    expect(main(page).get_by_role("textbox", name="Text")).to_have_value(text)


def test_the_glossary_explains_words_on_hover(page, app_url):
    page.goto(f"{app_url}/lessons?model=all-minilm-l6-v2&lesson=one-head")
    wait_for_app_run(page)
    query = main(page).locator("span.gloss", has_text="query").first
    expect(query).to_be_visible(timeout=120_000)
    assert query.get_attribute("title").startswith("query: A head's question vector")
    main(page).get_by_text("Glossary: the words this app uses").click()
    expect(main(page).get_by_text(re.compile(r"^KV cache: The keys and values"))).to_be_visible()


def test_the_three_families_side_by_side(page, app_url):
    page.goto(f"{app_url}/lessons?model=all-minilm-l6-v2&lesson=masks")
    wait_for_app_run(page)
    rerun(page, main(page).get_by_role("button", name=re.compile("^Side by side")).click)
    titles = main(page).locator(".gtitle")
    for title in ("all-minilm-l6-v2: self-attention", "smollm2-135m-instruct: causal self-attention",
                  "date-normalizer: encoder self-attention", "date-normalizer: decoder self-attention",
                  "date-normalizer: cross-attention (decoder → encoder)"):  # fmt: skip
        expect(titles.filter(has_text=title)).to_have_count(1, timeout=120_000)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "lesson-families")
