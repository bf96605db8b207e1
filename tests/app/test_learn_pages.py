"""The learning pages in Streamlit's AppTest: attention from scratch, positions, tokens, FFN memory."""

from __future__ import annotations

import pytest
import transformers as tf
from streamlit.testing.v1 import AppTest

from explorer import session
from tests.app.helpers import app, charts, load_folder, run
from tests.conftest import tiny_moe, tiny_tokenizer

HOSTILE = "the cat </script><b>x</b> <img src=x onerror=alert(1)> **bold** $x$"


def open_page(page: str, folder=None) -> AppTest:
    at = app(timeout=180)
    if folder is not None:
        load_folder(at, folder)
    at.switch_page(page)
    return run(at)


def titles(at: AppTest) -> list[str]:
    return [c["layout"]["title"]["text"] for c in charts(at)]


def latex(at: AppTest) -> list[str]:
    return [e.value.strip("$\n") for e in at.get("latex")]  # st.latex wraps the formula in $$ lines


# Attention from scratch


def test_from_scratch_on_the_default_model():
    at = open_page("views/from_scratch.py")
    assert "matches the model's own map" in at.success[0].value
    assert any(t.startswith("Q = X W_Q^{(0)}") for t in latex(at))
    assert any("\\mathrm{rot}" in t for t in latex(at))  # SmolLM2 is rotary
    assert float(at.metric[0].value) <= 1e-5
    at.selectbox(key="scratch_layer_box").set_value(7)
    at.selectbox(key="scratch_head_box").set_value(4)
    run(at)
    assert at.success[0].value.startswith("Layer 7, head 4: the computation below matches")
    names = titles(at)
    assert any(n.startswith("3. Keys K, kv head 1") for n in names)  # 9 heads on 3 kv heads: 4 // 3
    probs = [c for c in charts(at) if "Attention weights" in c["layout"]["title"]["text"]][0]
    z = probs["data"][0]["z"]
    n = len(probs["data"][0]["y"])
    assert probs["layout"]["title"]["text"].endswith(f"({n} × {n})")
    assert isinstance(z, (list, dict))
    diff = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("|from scratch")][0]["data"][0]
    assert diff["zmin"] == 0 and diff["zmax"] >= 1e-5  # a difference of 0 is the scale's white end


def test_from_scratch_encoder_decoder_stacks(tiny_dir):
    at = open_page("views/from_scratch.py", tiny_dir("t5"))
    assert "matches" in at.success[0].value
    assert any("unchanged" in t for t in latex(at))  # the encoder masks nothing
    at.radio(key="scratch_stack_box").set_value("decoder")
    run(at)
    assert "matches" in at.success[0].value
    assert any("B_{ij}" in t for t in latex(at))  # T5's relative position bias step
    assert any("j > i" in t for t in latex(at))
    assert "S' = S \\cdot 1" in latex(at)  # T5 does not scale
    at.radio(key="scratch_stack_box").set_value("cross")
    run(at)
    assert "matches" in at.success[0].value
    assert "K = E W_K^{(0)}" in latex(at)  # keys from the encoder's output
    probs = [c for c in charts(at) if "Attention weights" in c["layout"]["title"]["text"]][0]["data"][0]
    # keys: the source as the encoder read it; queries: the decoder's input, from its start token
    assert probs["x"][1] == "cat ·1" and probs["y"][0] == "[PAD] ·0" and probs["y"][2] == "cat ·2"


def test_from_scratch_bad_text(tiny_dir):
    at = open_page("views/from_scratch.py", tiny_dir("bert"))
    at.text_area(key=f"{session.TEXT}_box").set_value("   ")
    run(at)
    assert "The text is empty" in at.error[0].value
    at.text_area(key=f"{session.TEXT}_box").set_value(" ".join(["cat"] * 80))
    run(at)
    assert "reads at most 64" in at.error[0].value
    at.text_area(key=f"{session.TEXT}_box").set_value("the cat sat")
    run(at)  # the page recovers
    assert "matches" in at.success[0].value


def test_from_scratch_and_ffn_on_a_family_found_by_the_anatomy(tmp_path):
    """GPT-NeoX (fused per-head q/k/v, partial rotary, parallel residual) was refused before the anatomy."""
    model = tf.GPTNeoXForCausalLM(
        tf.GPTNeoXConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    )
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page("views/from_scratch.py", tmp_path)
    assert not at.warning and not at.error
    assert at.success and "matches the model's own map" in at.success[0].value
    at.switch_page("views/ffn.py")
    run(at)
    assert not at.error and charts(at)


def test_a_mixture_of_experts_on_the_learning_pages(tmp_path):
    """From scratch takes a Mixtral's attention apart; FFN memory says why it shows no neurons."""
    tiny_moe("mixtral").model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page("views/from_scratch.py", tmp_path)
    assert not at.warning and at.success and "matches the model's own map" in at.success[0].value
    at.switch_page("views/ffn.py")
    run(at)
    assert "mixture of experts" in at.warning[0].value and not at.error


def test_from_scratch_unsupported_family(tmp_path):
    model = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=40, d_model=32, n_layer=1, n_head=4, d_inner=64))
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page("views/from_scratch.py", tmp_path)
    assert "model type 'xlnet'" in at.warning[0].value  # says which model it cannot take apart
    at.switch_page("views/ffn.py")
    run(at)
    assert "model type 'xlnet'" in at.warning[0].value  # says which model it cannot take apart


# Positions


def test_positions_rotary_default_model():
    at = open_page("views/positions.py")
    names = titles(at)
    assert any(n.startswith("Sinusoidal encoding (128 × 576)") for n in names)
    assert any("after rotation" in n for n in names)
    assert any("base θ = 100000.0" in c.value for c in at.caption)
    decay = [c for c in charts(at) if "after rotation" in c["layout"]["title"]["text"]][0]["data"][0]
    assert decay["name"] == "all layers"


def test_positions_learned_gpt2(tiny_dir):
    at = open_page("views/positions.py", tiny_dir("gpt2"))
    names = titles(at)
    assert "Cosine similarity between positions" in names
    assert any(n.startswith("Learned position vectors (64 of 64 × 32)") for n in names)


def test_positions_t5_buckets(tiny_dir):
    at = open_page("views/positions.py", tiny_dir("t5"))
    names = titles(at)
    assert "encoder: learned bias per head" in names and "decoder: learned bias per head" in names
    bias = [c for c in charts(at) if c["layout"]["title"]["text"] == "encoder: learned bias per head"][0]
    z = bias["data"][0]["z"]  # a typed array {"dtype", "bdata", "shape"} or nested lists
    rows = int(z["shape"].split(",")[0]) if isinstance(z, dict) else len(z)
    assert rows == 4  # one row per head


# Tokens


def test_tokens_page_counts_and_escapes():
    at = open_page("views/tokens.py")
    at.text_area(key=f"{session.TEXT}_box").set_value(HOSTILE)
    run(at)
    from explorer.models.loading import LoadRequest

    tok = session.registry().get(LoadRequest("embedded", "smollm2-135m-instruct")).tokenizer
    n = len(tok(HOSTILE)["input_ids"])
    assert at.metric[0].value == str(n)
    html = at.get("html")[0].proto.body
    # The tokenizer cuts "</script>" into "</" and "script": each piece arrives escaped.
    assert ">␣&lt;/</span>" in html and "&gt;&lt;</span>" in html
    assert "<b>" not in html and "<img" not in html and "<script" not in html
    assert html.count('class="tok-chip"') == n
    table = at.dataframe[0].value
    assert list(table["id"]) == tok(HOSTILE)["input_ids"]
    assert "".join(table["text"]).replace("␣", " ").endswith("$x$")
    # side by side with Gemma's tokenizer (the default second choice)
    assert len(at.get("html")) == 3
    assert any("tokens here" in c.value for c in at.caption)


def test_tokens_page_empty_text():
    at = open_page("views/tokens.py")
    at.text_area(key=f"{session.TEXT}_box").set_value("")
    run(at)
    assert "The text is empty" in at.error[0].value


# FFN memory


def test_ffn_page_default_model():
    at = open_page("views/ffn.py")
    table = at.dataframe[0].value
    assert len(table) == 10 and table["activation"].abs().is_monotonic_decreasing
    assert any(c["data"][0]["type"] == "bar" for c in charts(at))
    shares = [c for c in charts(at) if "shares" in c["layout"]["title"]["text"]][0]
    assert [t["name"] for t in shares["data"]] == ["attention", "feed-forward"]
    at.toggle(key="ffn_through_norm").set_value(False)
    run(at)
    assert any("W_U\\, w_{out}" in t for t in latex(at))


def test_ffn_page_opens_on_the_token_that_predicts_and_follows_a_new_text():
    at = open_page("views/ffn.py")
    [b for b in at.button if b.label == "Example: a fact to recall"][0].click()
    run(at)
    box = at.selectbox(key="focus_position_box")
    assert box.format_func(box.value).endswith("of")  # the token whose next word is " Paris"
    pushers = at.dataframe[1].value  # which neurons push " Paris" at "of"
    effect = [c for c in pushers.columns if c.startswith("adds to the logit of")][0]
    assert "Paris" in effect and pushers[effect].is_monotonic_decreasing and pushers[effect].iloc[0] > 0
    at.text_input(key="ffn_pushed_box").set_value(" Parisians and Romans")
    run(at)
    assert "tokens here" in at.info[0].value and len(at.dataframe) == 1
    at.text_area(key=f"{session.TEXT}_box").set_value("Hello world")
    run(at)
    at.text_area(key=f"{session.TEXT}_box").set_value("A much longer sentence than the one before, ending")
    run(at)
    assert not at.exception
    box = at.selectbox(key="focus_position_box")
    assert box.value == len(box.options) - 1  # the new text's last token, not the old index
    at.session_state["focus_position"] = "3: mangled"  # what a browser can send back after the options change
    run(at)
    assert not at.exception  # replaced by the default, the last token
    assert at.selectbox(key="focus_position_box").value == len(box.options) - 1


def test_ffn_page_encoder(tiny_dir):
    at = open_page("views/ffn.py", tiny_dir("bert"))
    assert "not a decoder-only model" in at.info[0].value
    assert any("post-norm" in c.value for c in at.caption)


@pytest.mark.slow
def test_from_scratch_on_gemma_past_its_window():
    """Gemma 3 on a text longer than its sliding window (512): sliding and full layers both match."""
    at = app(timeout=300)
    at.selectbox(key=session.EMBEDDED).set_value("gemma-3-270m")
    run(at)
    at.sidebar.button[0].click()
    run(at)
    at.switch_page("views/from_scratch.py")
    run(at)
    text = " ".join(f"Item {i} is blue." for i in range(80))
    at.text_area(key=f"{session.TEXT}_box").set_value(text)
    run(at)
    assert "matches" in at.success[0].value
    assert any("sliding window of 512" in c.value for c in at.caption)
    assert any("i - j \\ge 512" in t for t in latex(at))
    assert any("1/\\sqrt{256}" in t for t in latex(at))  # query_pre_attn_scalar
    assert any(t.startswith("\\hat q") for t in latex(at))  # q_norm
    masked = [c for c in charts(at) if ". Masked" in c["layout"]["title"]["text"]][0]
    n = len(masked["data"][0]["y"])
    assert n > 512
    at.selectbox(key="scratch_layer_box").set_value(5)  # a full-attention layer
    run(at)
    assert "matches" in at.success[0].value
    assert any("full-attention layers" in c.value for c in at.caption)


def test_one_text_across_the_pages():
    """Typed on the Attention page, the text is there on every page that reads one text, and back."""
    at = open_page("views/attention.py")
    text = "The old lighthouse keeper climbed the stairs"
    at.text_area(key=f"{session.TEXT}_box").set_value(text)
    run(at)
    for page in ("views/ffn.py", "views/from_scratch.py", "views/tokens.py", "views/flow.py"):
        at.switch_page(page)
        run(at)
        assert not at.exception, page
        assert at.text_area(key=f"{session.TEXT}_box").value == text, page
    at.text_area(key=f"{session.TEXT}_box").set_value("Changed on the Flow page")
    run(at)
    at.switch_page("views/from_scratch.py")
    run(at)
    assert at.text_area(key=f"{session.TEXT}_box").value == "Changed on the Flow page"
    probs = [c for c in charts(at) if "Attention weights" in c["layout"]["title"]["text"]][0]
    assert any("Changed" in str(label) for label in probs["data"][0]["y"])  # the page ran on it


def test_the_focused_token_is_shared_by_ffn_memory_and_flow():
    at = open_page("views/ffn.py")
    at.selectbox(key="focus_position_box").set_value(2)
    run(at)
    at.switch_page("views/flow.py")
    run(at)
    assert not at.exception and at.selectbox(key="focus_position_box").value == 2  # the same token traced
    at.selectbox(key="focus_position_box").set_value(4)
    run(at)
    at.switch_page("views/ffn.py")
    run(at)
    assert at.selectbox(key="focus_position_box").value == 4
    at.text_area(key=f"{session.TEXT}_box").set_value("A new text on the FFN page")
    run(at)
    box = at.selectbox(key="focus_position_box")
    assert box.value == len(box.options) - 1  # a new text: its last token


def test_the_token_focus_query_is_the_focused_token_of_the_other_pages():
    at = open_page("views/attention.py")
    at.session_state[session.ATTN_VIEW] = "Token focus"
    run(at)
    query = at.session_state[session.ATTN_QUERY]  # "it", suggested
    at.switch_page("views/ffn.py")
    run(at)
    assert at.selectbox(key="focus_position_box").value == query  # FFN memory reads the same token
    at.selectbox(key="focus_position_box").set_value(3)
    run(at)
    at.switch_page("views/attention.py")
    run(at)
    assert not at.exception and at.session_state[session.ATTN_QUERY] == 3
    focus = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("How much")][0]
    assert "(3) attends to" in focus["layout"]["title"]["text"]
