"""The Generate page in AppTest: stepping, forcing a candidate, undo, encoder-decoders, encoders."""

from __future__ import annotations

from explorer import session
from tests.app.helpers import app, charts, load_folder, run

PAGE = "views/generate.py"


def button(at, label: str):
    return [b for b in at.button if b.label == label][0]


def stepper(at):
    return at.session_state[session.STEPPER][1]


def open_page(at):
    at.switch_page(PAGE)
    return run(at)


def undo_to(at):
    return next(s for s in at.selectbox if s.label == "Undo back to")


def test_step_pick_and_undo_on_the_default_decoder():
    at = open_page(app())
    assert "<|im_start|>user" in at.code[0].value  # the chat template, shown
    for _ in range(3):
        button(at, "Step").click()
        run(at)
    s = stepper(at)
    assert [x.how for x in s.steps] == ["greedy"] * 3
    assert at.metric[0].label == "Step 3: chosen token" and at.metric[0].value == s.steps[-1].token
    second = [b for b in at.button if b.key == "pick_1"][0]
    second.click()
    run(at)
    assert s.steps[-1].how == "picked" and s.steps[-1].rank == 2
    undo_to(at).set_value(1)  # undo back to after step 1
    button(at, "Undo").click()
    run(at)
    assert len(s.steps) == 1 and len(s.branches) == 1
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("branches you undid" in t for t in titles)
    assert any("What the new token" in t for t in titles)


def test_undo_after_the_end_of_text_enables_step_and_run_again():
    at = open_page(app())
    button(at, "Run 10 steps").click()
    run(at)
    s = stepper(at)
    assert s.finished  # the chat answer ends with <|im_end|> within 10 tokens
    assert button(at, "Step").disabled and button(at, "Run 10 steps").disabled  # as soon as it ends
    undo_to(at).set_value(0)  # undo back to the prompt
    button(at, "Undo").click()
    run(at)
    assert not s.steps and not s.finished
    assert not button(at, "Step").disabled and not button(at, "Run 10 steps").disabled
    assert not [b for b in at.selectbox if b.label == "Undo back to"]  # no stale list of steps


def test_settings_change_the_shaped_distribution():
    at = open_page(app())
    at.number_input(key=f"{session.GEN_TOP_K}_box").set_value(2)
    run(at)
    bars = charts(at)[0]["data"]
    shaped = bars[1]["x"]
    assert sum(1 for p in shaped if p > 0) == 2 and abs(sum(shaped) - 1) < 1e-5  # only two survive top-k


def test_run_several_steps_and_an_encoder_decoder(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("t5"))
    open_page(at)
    assert at.text_area(key=f"{session.GEN_SOURCE}_box").value
    at.number_input(key=f"{session.GEN_STEPS}_box").set_value(4)
    run(at)
    button(at, "Run 4 steps").click()
    run(at)
    s = stepper(at)
    assert len(s.steps) == 4 or s.finished
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("cross-attention over the source" in t for t in titles)


def test_an_encoder_cannot_generate(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("bert"))
    open_page(at)
    assert "is an encoder" in at.warning[0].value


def test_an_empty_prompt_gets_a_message():
    at = open_page(app())
    at.text_area(key=f"{session.GEN_PROMPT}_box").input("  ")
    run(at)
    assert "empty" in at.error[0].value


def test_the_generation_and_settings_survive_a_visit_to_another_page():
    at = open_page(app())
    at.text_area(key=f"{session.GEN_PROMPT}_box").input("Name a colour.")
    at.number_input(key=f"{session.GEN_TEMPERATURE}_box").set_value(0.7)
    run(at)
    for _ in range(2):
        button(at, "Step").click()
        run(at)
    before = [s.token_id for s in stepper(at).steps]
    at.switch_page("views/model.py")
    run(at)
    open_page(at)
    assert [s.token_id for s in stepper(at).steps] == before
    assert at.text_area(key=f"{session.GEN_PROMPT}_box").value == "Name a colour."
    assert at.number_input(key=f"{session.GEN_TEMPERATURE}_box").value == 0.7


def test_a_decoder_after_an_encoder_decoder_gets_its_own_prompt(tiny_dir):
    """The encoder-decoder's empty decoder prefix is not a decoder's prompt: it said 'the prompt is empty'."""
    at = app()
    load_folder(at, tiny_dir("t5"))
    open_page(at)
    assert at.text_input(key=f"{session.GEN_PROMPT}_box").value == ""  # the decoder prefix
    load_folder(at, tiny_dir("gpt2"))
    open_page(at)
    assert not at.error and at.text_area(key=f"{session.GEN_PROMPT}_box").value
    at.text_area(key=f"{session.GEN_PROMPT}_box").input("")  # a user who empties it is told
    run(at)
    assert "empty" in at.error[0].value


def test_each_generated_token_is_attributed_and_new_steps_add_rows(tiny_dir):
    import numpy as np

    from explorer.analyses import attribution
    from tests.app.helpers import numbers

    at = app()
    load_folder(at, tiny_dir("llama"))
    open_page(at)
    at.text_area(key=f"{session.GEN_PROMPT}_box").set_value("the cat sat on the")
    run(at)
    for _ in range(2):
        button(at, "Step").click()
        run(at)
    at.toggle(key=f"{session.GEN_ATTR}_box").set_value(True)
    run(at)
    s = stepper(at)
    found = at.session_state["generate_attr_done"][1]
    assert found.ids == tuple(s.ids) and found.scores.shape == (2, len(s.ids) - 1)
    spec = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("Input × gradient: each"))
    z = spec["data"][0]["z"]
    shown = np.array(numbers(z) if isinstance(z, dict) else [numbers(r) for r in z], dtype=float)
    shown = shown.reshape(found.scores.shape)
    # the page draws each row over its largest |score|; the library's scores are checked in the unit tests
    want = found.scores / np.nanmax(np.abs(found.scores), axis=1, keepdims=True)
    assert np.allclose(np.nan_to_num(shown, nan=9), np.nan_to_num(want, nan=9), atol=1e-6)
    button(at, "Step").click()
    run(at)
    grown = at.session_state["generate_attr_done"][1]
    assert grown.scores.shape == (3, len(s.ids) - 1)
    assert np.array_equal(grown.scores[:2, : found.scores.shape[1]], found.scores, equal_nan=True)
    fresh = attribution.per_token(at.session_state[session.STEPPER][1].loaded, s.ids, len(s.prompt_ids))
    assert np.array_equal(grown.scores, fresh.scores, equal_nan=True)  # the kept rows are still right
    assert at.query_params["attribute"] == "1"


def test_an_encoder_decoders_tokens_are_attributed_over_its_source(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("t5"))
    open_page(at)
    button(at, "Step").click()
    run(at)
    at.toggle(key=f"{session.GEN_ATTR}_box").set_value(True)
    at.selectbox(key=f"{session.GEN_ATTR_METHOD}_box").set_value("integrated_gradients")
    run(at)
    s = stepper(at)
    found = at.session_state["generate_attr_done"][1]
    assert found.scores.shape == (1, len(s.source_ids))
    assert any("over the source's tokens" in c["layout"]["title"]["text"] for c in charts(at))
    said = [m.value for m in [*at.success, *at.warning]]
    assert any("convergence delta" in m for m in said)  # integrated gradients' convergence, said either way


def test_an_encoder_decoder_is_steered_in_its_encoder(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("t5"))
    open_page(at)
    at.toggle(key=f"{session.GEN_STEER}_box").set_value(True)
    run(at)
    s = stepper(at)
    assert s.steer is not None and s.steer.stack == "encoder"
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any(t.startswith("The same candidates, steered and not (layer 0") for t in titles)
