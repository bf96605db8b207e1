"""The bad inputs of every page, gathered (issue: ready for a classroom): each gets a clear message where
the user looks, and the same session keeps working with the next good input."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from explorer import session
from explorer.errors import LoadError
from explorer.models import registry as registry_module
from tests.app.helpers import APP, app, charts, load_folder, run
from tests.unit.test_capture import _cli

ATTENTION = "views/attention.py"
GENERATE = "views/generate.py"
TASKS = "views/tasks.py"
GOOD = "the cat sat on the mat"


def attention_page(folder=None) -> AppTest:
    at = app()
    if folder is not None:
        load_folder(at, folder)
    at.switch_page(ATTENTION)
    return run(at)


def with_text(at: AppTest, text: str) -> AppTest:
    at.text_area(key=f"{session.TEXT}_box").input(text)
    return run(at)


def said(at: AppTest) -> str:
    return " ".join(x.value for x in [*at.main.error, *at.main.warning, *at.main.info])


def works(at: AppTest) -> None:
    """The session goes on: a good text draws its map."""
    with_text(at, GOOD)
    assert not at.main.error and charts(at), said(at)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "The text is empty"),
        ("   \n\t ", "The text is empty"),
        ("word " * 500, "this model reads at most 128 tokens"),  # tiny Llama: context 128
        ("a " * 2**19, "this model reads at most 128 tokens"),  # a 1 MB paste
    ],
    ids=["empty", "blank", "over-the-context", "1-MB-paste"],
)
def test_bad_texts_get_a_message(text, message, tiny_dir):
    at = with_text(attention_page(tiny_dir("llama")), text)
    assert message in " ".join(e.value for e in at.main.error)
    assert not charts(at)
    works(at)


def test_emoji_right_to_left_and_control_characters_are_read_as_text():
    """On the default model (a byte-level tokenizer: every character is readable)."""
    text = "I ❤️ 🤖! שלום עולם مرحبا \u202eevil\u202c \x00\x07\x1b[31m red\x1b[0m </script><b>x</b>"
    at = with_text(attention_page(), text)
    assert not at.main.error and charts(at), said(at)
    cap = session.store().get(at.session_state[session.CAPTURE])
    assert len(cap.sequence) > 20
    chips = " ".join(h.proto.body for h in at.get("html"))
    assert "<b>" not in chips and "</script>" not in chips and "&lt;" in chips  # text, never HTML
    assert "␛" in chips and "␀" in chips  # controls shown as visible marks (an override as its bytes),
    assert not any(c in chips for c in "\x00\x07\x1b\u202e")  # never raw (an override reorders the rest)


def test_unknown_model_folders_and_corrupt_files_keep_the_previous_model(tmp_path, tiny_dir):
    at = attention_page(tiny_dir("gpt2"))
    cases = {
        tmp_path / "no-such-folder": "No folder at",
        tmp_path / "notes": "has no config.json",
        tmp_path / "truncated": "model.safetensors is damaged",
    }
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("not a model")
    shutil.copytree(tiny_dir("gpt2"), tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    for folder, message in cases.items():
        load_folder(at, folder)
        assert message in at.sidebar.error[0].value
        assert at.session_state[session.REQUEST].ref == str(tiny_dir("gpt2"))  # kept
        works(at)
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00garbage" * 10)
    at.radio(key=session.SOURCE).set_value("gguf")
    run(at)
    at.text_input(key=session.GGUF).set_value(str(garbage))
    at.sidebar.button[0].click()
    run(at)
    assert "not a readable GGUF file" in at.sidebar.error[0].value
    works(at)


def test_a_task_the_model_cannot_do_is_refused_with_the_models_that_can(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("bert"))
    at.switch_page(TASKS)
    run(at)
    at.selectbox(key="tasks_task").set_value("text-generation")
    run(at)
    text = " ".join(e.value for e in at.main.error)
    assert "cannot do text generation" in text and "gpt2" in text.lower()
    at.selectbox(key="tasks_task").set_value("fill-mask")  # one it can do still works
    run(at)
    assert not at.main.error


def test_zero_or_negative_step_counts():
    at = app()
    at.switch_page(GENERATE)
    run(at)
    box = at.number_input(key=f"{session.GEN_STEPS}_box")
    assert box.min == 1  # the page's box cannot go below one step
    # a link cannot ask for a count (it carries the tokens themselves); the command line refuses:
    for steps in ("0", "-3"):
        done = _cli("generate", "smollm2-135m-instruct", "--prompt", "Hi", "--steps", steps, "--json")
        assert done.returncode == 1 and "--steps must be 1 or more" in done.stderr and done.stdout == ""


def test_too_many_steps_say_the_limit():
    at = app()
    at.switch_page(GENERATE)
    run(at)
    at.number_input(key=f"{session.GEN_STEPS}_box").set_value(100000)
    run(at)
    assert "At most 256 steps per run (100,000 asked for)" in at.main.warning[0].value
    assert any(b.label == "Run 256 steps" for b in at.button)


def test_an_encoder_decoder_without_a_target_reads_its_own_output(tiny_dir):
    at = attention_page(tiny_dir("t5"))
    at.text_area(key=f"{session.TARGET}_box").input("")
    run(at)
    assert not at.main.error
    cap = session.store().get(at.session_state[session.CAPTURE])
    assert cap.target_generated and len(cap.sequence) >= 1
    assert any("own greedy output" in h.proto.body for h in at.get("html"))
    at.switch_page(GENERATE)  # and Generate asks for the source it needs
    run(at)
    at.text_area(key=f"{session.GEN_SOURCE}_box").input(" ")
    run(at)
    assert "Type a source text" in " ".join(e.value for e in at.main.error)


def test_a_1_mb_prompt_on_the_generate_page_gets_a_message():
    at = app()
    at.switch_page(GENERATE)
    run(at)
    at.text_area(key=f"{session.GEN_PROMPT}_box").input("a " * 2**19)
    run(at)
    assert "exceed the model's context length (8192)" in " ".join(e.value for e in at.main.error)
    at.text_area(key=f"{session.GEN_PROMPT}_box").input("Name a colour.")
    run(at)
    assert not at.main.error and at.session_state[session.STEPPER][1].prompt_tokens


@pytest.mark.parametrize("page", [None, ATTENTION, GENERATE, "views/positions.py", "views/tokens.py"])
def test_a_default_model_that_cannot_be_loaded_is_explained_on_the_page(page, monkeypatch):
    """A first visit whose default model fails to load says why in the page itself, not only in the
    sidebar (whose message sits below the fold of a laptop's screen)."""

    def broken(request, progress):
        raise LoadError("The weights of the default model cannot be loaded: a test's damaged file.")

    monkeypatch.setattr(registry_module, "load_model", broken)
    at = AppTest.from_file(APP, default_timeout=120)
    if page is not None:
        at.switch_page(page)
    run(at)
    assert "a test's damaged file" in " ".join(e.value for e in at.main.error)
    assert "sidebar" in said(at)  # and where to pick another
