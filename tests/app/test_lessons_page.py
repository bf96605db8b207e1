"""The Lessons page in Streamlit's AppTest, on tiny models: the verdicts, bad input, a lesson that does not
apply, hostile text shown as text, and the page's link."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from explorer import session
from explorer.lessons import course
from explorer.web.display import md
from tests.app.helpers import app, load_folder, run
from tests.app.test_learn_pages import HOSTILE
from tests.conftest import tiny_tokenizer


def lesson_page(folder, lesson: str, **state) -> AppTest:
    at = app(timeout=180)
    load_folder(at, folder)
    at.session_state[session.LESSON] = lesson
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("views/lessons.py")
    return run(at)


def check(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Check").click()
    return run(at)


def test_a_number_answer_is_checked_against_the_model(tiny_dir):
    at = lesson_page(tiny_dir("llama"), "masks")
    assert at.title[0].value == "5. Encoder, decoder, encoder-decoder"
    box = at.main.text_input[-1]
    assert box.label == "Your answer (weights)"
    n = len(tiny_tokenizer()(at.session_state[session.TEXT])["input_ids"])
    box.set_value(str(n * (n - 1) // 2 + 1))
    check(at)
    assert at.main.error and at.main.error[0].value.startswith("Not quite.")
    at.main.text_input[-1].set_value("twelve")
    check(at)
    assert "is not a number" in at.main.warning[0].value
    at.main.text_input[-1].set_value(str(n * (n - 1) // 2))
    check(at)
    assert at.main.success[-1].value.startswith("Right.")


def test_a_choice_and_the_revealed_answer(tiny_dir):
    at = lesson_page(tiny_dir("gpt2"), "positions")
    next(b for b in at.button if b.label == "Show the answer").click()
    run(at)
    assert "Answer:" in at.main.info[-1].value and "learned vector per position" in at.main.info[-1].value
    at.main.radio[-1].set_value(at.main.radio[-1].options[0])  # "A learned vector per position ..."
    check(at)
    assert at.main.success[-1].value.startswith("Right.")


def test_a_lesson_that_does_not_apply_says_why(tiny_dir):
    at = lesson_page(tiny_dir("bert"), "kv-cache")
    assert any("does not generate text" in i.value for i in at.main.info)
    assert any(b.label.startswith("Load SmolLM2") for b in at.button)


def test_empty_text_gets_a_message(tiny_dir):
    at = lesson_page(tiny_dir("llama"), "heads", **{session.TEXT: " "})
    assert at.main.error, "an empty text gets a message"
    assert not at.get("plotly_chart")


def test_hostile_text_is_shown_as_text():
    """On the default model (a byte-level tokenizer keeps <, > and / in its tokens)."""
    at = app(timeout=180)
    at.session_state[session.LESSON] = "tokens"
    at.session_state[session.TEXT] = HOSTILE
    at.switch_page("views/lessons.py")
    run(at)
    html = "".join(e.proto.body for e in at.get("html"))
    assert "&lt;" in html and "<img" not in html and "</script>" not in html and "<b>" not in html
    at.session_state[session.PRESENT] = True
    at.session_state[session.LESSON_SCREEN] = 1
    run(at)
    caption = at.main.caption[0].value
    assert md(HOSTILE) in caption  # Markdown-escaped: it shows as typed


def test_the_link_carries_lesson_screen_and_presentation(tiny_dir):
    at = lesson_page(tiny_dir("t5"), "cross-attention", **{session.PRESENT: True, session.LESSON_SCREEN: 2})
    params = at.query_params
    assert (params["lesson"], params["present"], params["screen"]) == ("cross-attention", "1", "2")
    assert (
        at.title[0].value == f"{course.LESSONS.index(course.BY_ID['cross-attention']) + 1}. Cross-attention"
    )
    assert any(r.label == "Your answer" for r in at.main.radio)  # the question screen, on an encoder-decoder


def _path(node, label: str, here=()):
    """Where the button `label` sits in the page (its indexes from the main area down), or None."""
    for i, child in getattr(node, "children", {}).items():
        if getattr(child, "type", None) == "button" and child.label == label:
            return (*here, i)
        found = _path(child, label, (*here, i))
        if found is not None:
            return found
    return None


def test_the_arrows_keep_their_place_when_a_verdict_or_an_answer_appears(tiny_dir):
    """An arrow key works through the button it belongs to; a button that moves while the page redraws is
    unmounted for a moment, and a key pressed then was lost (a class's → right after "Right.")."""
    at = lesson_page(tiny_dir("gpt2"), "positions", **{session.PRESENT: True, session.LESSON_SCREEN: 2})
    where = {label: _path(at.main, label) for label in ("Next →", "← Previous")}
    assert None not in where.values()
    next(b for b in at.button if b.label == "Show the answer").click()
    run(at)
    assert "Answer:" in at.main.info[-1].value
    assert {label: _path(at.main, label) for label in where} == where
    at.main.radio[-1].set_value(at.main.radio[-1].options[0])
    check(at)
    assert at.main.success[-1].value.startswith("Right.")
    assert {label: _path(at.main, label) for label in where} == where
