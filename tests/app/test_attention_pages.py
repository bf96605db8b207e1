"""The Attention and Hidden states pages in AppTest, on tiny models of each family."""

from __future__ import annotations

import numpy as np
import pytest

from explorer import session
from explorer.analyses.hidden import LENS_FIRST
from explorer.analyses.tokens import display_tokens
from tests.app.helpers import app, charts, load_folder, numbers, run

ATTENTION = "views/attention.py"
HIDDEN = "views/hidden_states.py"
TEXT = "the cat sat on the mat because it was tired"
SHAPES = {  # (layers, heads) of the tiny models in tests/conftest.py
    "bert": (2, 4),
    "gpt2": (2, 4),
    "llama": (2, 4),
}


def open_page(kind, tiny_dir, page=ATTENTION, text=TEXT):
    at = app()
    load_folder(at, tiny_dir(kind))
    at.session_state[session.TEXT] = text
    at.switch_page(page)
    return run(at)


def view(at, name: str, key=session.ATTN_VIEW):
    at.session_state[key] = name
    return run(at)


def heatmap_shape(spec: dict) -> tuple[int, int]:
    trace = spec["data"][0]
    z = trace["z"]
    if isinstance(z, dict):  # a base64 typed array with its shape
        return tuple(int(x) for x in str(z["shape"]).split(","))
    return len(z), len(z[0])


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_every_attention_view_on_a_single_stack(kind, tiny_dir):
    at = open_page(kind, tiny_dir)
    assert session.store().get(at.session_state[session.CAPTURE]).sequence.tokens == tuple(TEXT.split())
    n = len(TEXT.split())
    layers, heads = SHAPES[kind]
    one = charts(at)[0]
    assert heatmap_shape(one) == (n, n)
    assert "layer 0, head 0" in one["layout"]["title"]["text"]
    at.selectbox(key=f"{session.ATTN_LAYER}_box").set_value(1)
    at.selectbox(key=f"{session.ATTN_HEAD}_box").set_value(3)
    one = charts(run(at))[0]
    assert "layer 1, head 3" in one["layout"]["title"]["text"]

    grid = charts(view(at, "All heads"))[0]
    assert grid["data"][0]["type"] == "image" and grid["data"][0]["source"].startswith("data:image/png")
    assert len(grid["data"][1]["customdata"]) == layers * heads

    mean, rolled = charts(view(at, "Mean and rollout"))
    assert heatmap_shape(mean) == heatmap_shape(rolled) == (n, n)

    focus, top = charts(view(at, "Token focus"))
    assert heatmap_shape(focus) == (layers, heads)
    assert at.selectbox(key=f"{session.ATTN_QUERY}_box").value == TEXT.split().index("it")

    stats = charts(view(at, "Head statistics"))[0]
    assert heatmap_shape(stats) == (layers, heads)
    at.radio(key=f"{session.ATTN_STAT}_box").set_value("entropy")
    values = np.array(numbers(charts(run(at))[0]["data"][0]["z"]))
    assert (values >= 0).all() and (values <= np.log2(n) + 1e-5).all()
    reference = [c.value for c in at.caption if c.value.startswith("For reference")][0]
    # the causal mask leaves query i its i + 1 keys: the mean of log2(1..n), not log2(n)
    expected = np.log2(np.arange(1, n + 1)).mean() if kind != "bert" else np.log2(n)
    assert f"{expected:.2f} bits" in reference

    view(at, "bertviz")
    frames = at.get("iframe")
    assert len(frames) == 1
    html = frames[0].proto.srcdoc
    assert "because" in html and "<script src" not in html
    assert at.download_button  # the NPZ export


def test_encoder_decoder_offers_encoder_decoder_and_cross_attention(tiny_dir):
    at = open_page("t5", tiny_dir)
    src = len(session.store().get(at.session_state[session.CAPTURE]).source)
    tgt = len(session.store().get(at.session_state[session.CAPTURE]).sequence)
    assert at.session_state[session.ATTN_KIND] == "cross"
    assert heatmap_shape(charts(at)[0]) == (tgt, src)
    # each cross-attention row is named by the token it writes: the next decoder input, then the prediction
    cap = session.store().get(at.session_state[session.CAPTURE])
    rows = charts(at)[0]["data"][0]["y"]
    tokens = cap.sequence.tokens
    assert rows[0] == f"0·{tokens[0]} → {tokens[1]}"
    tokenizer = [m for m in session.registry().loaded() if m.request.source == "folder"][0].tokenizer
    assert cap.next_token == display_tokens(tokenizer, [int(cap.next_token_logits.argmax())])[0]
    assert rows[-1] == f"{tgt - 1}·{tokens[-1]} → {cap.next_token}"
    at.session_state[session.ATTN_KIND] = "encoder"
    assert heatmap_shape(charts(run(at))[0]) == (src, src)
    at.session_state[session.ATTN_KIND] = "decoder"
    assert heatmap_shape(charts(run(at))[0]) == (tgt, tgt)
    # the decoder of the tiny T5 has 3 layers, its encoder 2
    at.session_state[session.ATTN_KIND] = "cross"
    grid = charts(view(at, "All heads"))[0]
    assert len(grid["data"][1]["customdata"]) == 3 * 4
    assert len(charts(view(at, "Mean and rollout"))) == 1  # no rollout across two sequences
    stats = view(at, "Head statistics").radio(key=f"{session.ATTN_STAT}_box")
    assert list(stats.options) == [
        "Entropy (bits): how spread out each query's attention is, averaged over queries",
        "Share on the first token (attention sink), averaged over queries",
    ]
    view(at, "bertviz")
    html = at.get("iframe")[0].proto.srcdoc
    assert "Cross-attention" in html and "Encoder self-attention" in html
    # bertviz opens on the kind the page's selector shows (it opened on the encoder's self-attention)
    assert '"default_filter":"2"' in html and '<option value="2" selected>Cross-attention' in html
    at.session_state[session.ATTN_KIND] = "decoder"
    html = run(at).get("iframe")[0].proto.srcdoc
    assert '"default_filter":"1"' in html and '<option value="1" selected>Decoder' in html


def test_a_target_prefix_is_read_as_given(tiny_dir):
    at = open_page("bart", tiny_dir)
    at.text_area(key=f"{session.TARGET}_box").input("the dog ran")
    run(at)
    cap = session.store().get(at.session_state[session.CAPTURE])
    assert not cap.target_generated and cap.sequence.tokens[-3:] == ("the", "dog", "ran")


def test_bad_text_gets_a_message_and_the_page_recovers(tiny_dir):
    at = open_page("gpt2", tiny_dir, text="   ")
    assert "empty" in at.error[0].value
    at.text_area(key=f"{session.TEXT}_box").input(" ".join(["cat"] * 70))
    run(at)
    assert "70 tokens long" in at.error[0].value and "at most 64" in at.error[0].value
    at.text_area(key=f"{session.TEXT}_box").input(TEXT)
    run(at)
    assert not at.error and charts(at)


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
def test_hidden_states_page(kind, tiny_dir):
    at = open_page(kind, tiny_dir, page=HIDDEN)
    cap = session.store().get(at.session_state[session.CAPTURE])
    norms = charts(at)
    stacks = 2 if kind == "t5" else 1
    assert len(norms) == stacks
    assert heatmap_shape(norms[-1]) == cap.hidden_states.shape[:2]
    cos = charts(view(at, "Change per layer", session.HIDDEN_VIEW))
    assert heatmap_shape(cos[-1]) == (cap.hidden_states.shape[0] - 1, cap.hidden_states.shape[1])
    options = [b for b in at.get("button_group") if b.key == f"{session.HIDDEN_VIEW}_box"][0].options
    assert ("Logit lens" in options) == (kind == "llama")


def test_logit_lens_on_a_decoder(tiny_dir):
    at = open_page("llama", tiny_dir, page=HIDDEN, text="the cat sat")
    lens = charts(view(at, "Logit lens", session.HIDDEN_VIEW))[0]
    assert heatmap_shape(lens) == (2 + 1, 3)  # embeddings + 2 layers, every position of a short text
    assert len(lens["data"][0]["text"][0]) == 3


def test_the_logit_lens_opens_on_the_last_positions_of_each_new_text(tiny_dir):
    at = open_page("llama", tiny_dir, page=HIDDEN)
    view(at, "Logit lens", session.HIDDEN_VIEW)
    n = len(at.session_state[session.LENS_FOR][1])
    assert n > LENS_FIRST
    assert at.session_state[session.LENS_POSITIONS] == list(
        range(n - LENS_FIRST, n)
    )  # the last: the next token
    at.session_state[session.LENS_POSITIONS] = [0, 1]
    run(at)
    assert heatmap_shape(charts(at)[0]) == (3, 2)
    at.text_area(key=f"{session.TEXT}_box").set_value("a much longer text than the one before it, " * 2)
    run(at)
    m = len(at.session_state[session.LENS_FOR][1])
    assert at.session_state[session.LENS_POSITIONS] == list(range(m - LENS_FIRST, m))
    assert heatmap_shape(charts(at)[0]) == (3, LENS_FIRST)


def test_the_text_and_the_view_survive_a_visit_to_another_page(tiny_dir):
    at = open_page("gpt2", tiny_dir, text="the dog ran to park")
    view(at, "One head")
    at.selectbox(key=f"{session.ATTN_LAYER}_box").set_value(1)
    run(at)
    at.switch_page("views/model.py")
    run(at)
    at.switch_page(ATTENTION)
    run(at)
    assert at.selectbox(key=f"{session.ATTN_LAYER}_box").value == 1
    assert "layer 1, head 0" in charts(at)[0]["layout"]["title"]["text"]
    at.switch_page("views/model.py")
    run(at)
    at.switch_page(HIDDEN)
    run(at)
    assert at.text_area(key=f"{session.TEXT}_box").value == "the dog ran to park"


def test_norms_on_a_log_scale_and_without_the_first_token(tiny_dir):
    at = open_page("llama", tiny_dir, page=HIDDEN)
    cap = session.store().get(at.session_state[session.CAPTURE])
    norms = np.linalg.norm(cap.hidden_states.astype(np.float64), axis=-1)
    at.toggle(key="hidden_norms_log_box").set_value(True)
    trace = charts(run(at))[0]["data"][0]
    assert np.allclose(numbers(trace["z"]), np.log10(norms).ravel(), atol=1e-4)  # coloured by the log
    assert np.allclose(numbers(trace["customdata"]), norms.ravel(), rtol=1e-4)  # the hover: the norm
    at.toggle(key="hidden_norms_skip_first_box").set_value(True)
    trace = charts(run(at))[0]["data"][0]
    assert len(trace["x"]) == norms.shape[1] - 1 and trace["x"][0].startswith("1·")


def test_token_focus_starts_again_on_a_new_text(tiny_dir):
    """Positions chosen on one text mean other tokens on the next: the pair is suggested again."""
    at = open_page("gpt2", tiny_dir)
    view(at, "Token focus")
    assert at.session_state[session.ATTN_QUERY] == TEXT.split().index("it")
    at.selectbox(key=f"{session.ATTN_QUERY}_box").set_value(0)
    run(at)
    assert at.session_state[session.ATTN_QUERY] == 0
    at.text_area(key=f"{session.TEXT}_box").set_value("the dog ran and it was fast today")
    run(at)
    assert at.session_state[session.ATTN_QUERY] == 4  # "it" in the new text, not the old index 0
    focus = charts(at)[0]["layout"]["title"]["text"]
    assert focus.startswith("How much “it” (4) attends to")


def test_a_masked_language_model_opens_on_a_sentence_with_its_mask(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("bert"))  # BertForMaskedLM
    at.switch_page(ATTENTION)
    run(at)
    assert at.text_area(key=f"{session.TEXT}_box").value == "The cat sat on the [MASK] because it was tired."
    load_folder(at, tiny_dir("gpt2"))  # the example follows the model; a text the user wrote would stay
    run(at)
    assert at.text_area(key=f"{session.TEXT}_box").value == "The cat sat on the mat because it was tired."
    at.text_area(key=f"{session.TEXT}_box").set_value("my own words")
    run(at)
    load_folder(at, tiny_dir("bert"))
    run(at)
    assert at.text_area(key=f"{session.TEXT}_box").value == "my own words"
