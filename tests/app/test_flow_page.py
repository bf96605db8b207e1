"""The Flow page in Streamlit's AppTest: the graph of routes, the details of an edge and of an FFN mark,
encoders from any position, encoder-decoders with cross-attention edges, bad input, escaped tokens."""

from __future__ import annotations

import transformers as tf
from streamlit.testing.v1 import AppTest

from explorer import session
from tests.app.helpers import app, charts, load_folder, numbers, run
from tests.conftest import MODEL_CLASSES, tiny_config, tiny_tokenizer

PAGE = "views/flow.py"
TEXT_BOX = f"{session.TEXT}_box"
TARGET_BOX = f"{session.TARGET}_box"
HOSTILE = "the cat </script><b>x</b> <img src=x onerror=alert(1)> **bold**"


def strong(kind: str, folder):
    """A tiny checkpoint initialized with larger weights than the default (std 0.02), so that its
    attention writes a visible part of the residual stream and edges pass the page's thresholds."""
    import torch

    config = tiny_config(kind)
    config.init_std = config.initializer_range = 0.3
    torch.manual_seed(0)
    getattr(tf, MODEL_CLASSES[kind])(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def open_page(folder=None) -> AppTest:
    at = app(timeout=180)
    if folder is not None:
        load_folder(at, folder)
    at.switch_page(PAGE)
    return run(at)


def graph(at: AppTest) -> dict:
    found = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("Routes to")]
    assert len(found) == 1
    return found[0]


def trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def line_traces(spec: dict, kind: str) -> list[dict]:
    return [t for t in spec["data"] if t.get("name", "").startswith(f"{kind} ") and t.get("mode") == "lines"]


def test_default_model_graph_edge_and_ffn_details():
    at = open_page()
    spec = graph(at)
    n_tokens = len(spec["layout"]["xaxis"]["ticktext"])
    assert spec["layout"]["title"]["text"].startswith(f"Routes to {n_tokens - 1} ")  # the last token
    assert line_traces(spec, "attention") and line_traces(spec, "residual")
    edges = trace(spec, "edges")
    assert len(edges["customdata"]) == len(numbers(edges["x"])) > 0
    # the run is kept once in the server's store, with its size
    key = ("flow", at.session_state[session.REQUEST], at.text_area(key=TEXT_BOX).value, "")
    assert key in session.store() and session.store().used >= session.store().get(key).nbytes > 0
    # node hover: the logit lens of a decoder
    assert any("logit lens" in h for h in trace(spec, "nodes")["hovertext"])
    assert "Details for" in [s.label for s in at.selectbox]
    details = at.selectbox(key="flow_detail_box")
    attention = [k for k in details.options if k.startswith("layer") and "attention:" in k]
    ffn = [k for k in details.options if k.startswith("layer") and " FFN at " in k]
    assert attention and ffn
    details.select_index(details.options.index(attention[0]))
    run(at)
    heads = at.dataframe[0].value
    assert list(heads["head"]) and len(heads) == 9  # SmolLM2: 9 query heads
    assert abs(heads["share of the edge"].sum() - 1) < 1e-3
    # the chosen edge is drawn highlighted
    assert any(t.get("name") == "selected" for t in graph(at)["data"])
    at.selectbox(key="flow_detail_box").select_index(
        at.selectbox(key="flow_detail_box").options.index(ffn[0])
    )
    run(at)
    neurons = at.dataframe[0].value
    assert len(neurons) == 10 and "promotes (through the unembedding)" in neurons.columns
    shares = list(neurons["share of the FFN output"])
    assert shares == sorted(shares, reverse=True)


def test_threshold_and_position():
    at = open_page()
    before = len(trace(graph(at), "edges")["customdata"])
    at.slider(key="flow_threshold_box").set_value(0.3)
    run(at)
    after = graph(at)
    assert len(trace(after, "edges")["customdata"]) < before
    assert "threshold 0.3" in after["layout"]["title"]["text"]
    at.selectbox(key="focus_position_box").select_index(2)
    run(at)
    spec = graph(at)
    assert spec["layout"]["title"]["text"].startswith("Routes to 2 ")
    # a causal model's routes to token 2 stay on tokens 0..2
    assert max(numbers(trace(spec, "nodes")["x"])) <= 2
    # every token stays on the axis
    assert spec["layout"]["xaxis"]["range"][1] > len(spec["layout"]["xaxis"]["ticktext"]) - 1
    # a new text starts again from its last token
    at.text_area(key=TEXT_BOX).set_value("Paris is the capital of")
    run(at)
    spec = graph(at)
    last = len(spec["layout"]["xaxis"]["ticktext"]) - 1
    assert spec["layout"]["title"]["text"].startswith(f"Routes to {last} ")
    assert at.selectbox(key="flow_detail_box").index == 0


def test_encoder_from_any_position(tiny_dir):
    at = open_page(tiny_dir("bert"))
    at.selectbox(key="focus_position_box").select_index(0)
    run(at)
    spec = graph(at)
    assert spec["layout"]["title"]["text"].startswith("Routes to 0 ")
    assert len(at.selectbox(key="focus_position_box").options) == len(spec["layout"]["xaxis"]["ticktext"])
    assert not any("logit lens" in h for h in trace(spec, "nodes")["hovertext"])  # no LM head to read with


def test_encoder_decoder_cross_edges(tmp_path):
    at = open_page(strong("bart", tmp_path))
    at.text_area(key=TEXT_BOX).set_value("the cat sat on the mat")
    at.text_area(key=TARGET_BOX).set_value("the dog ran")
    at.slider(key="flow_threshold_box").set_value(0.01)
    run(at)
    spec = graph(at)
    assert line_traces(spec, "cross")
    assert "encoder" in [t.get("name") for t in spec["data"]]
    labels = spec["layout"]["xaxis"]["ticktext"]
    assert labels[:6] == ["the", "cat", "sat", "on", "the", "mat"]
    cross = [k for k in at.selectbox(key="flow_detail_box").options if "cross" in k]
    assert cross and "encoder" in cross[0]
    at.selectbox(key="flow_detail_box").select_index(
        at.selectbox(key="flow_detail_box").options.index(cross[0])
    )
    run(at)
    assert len(at.dataframe[0].value) == 4  # the tiny BART's 4 heads
    assert "Encoder-decoder" in " ".join(c.value for c in at.caption)


def test_bad_input_and_escaping(tiny_dir):
    at = open_page(tiny_dir("gpt2"))
    at.text_area(key=TEXT_BOX).set_value("   ")
    run(at)
    assert "The text is empty" in at.error[0].value
    at.text_area(key=TEXT_BOX).set_value(" ".join(["cat"] * 120))
    run(at)
    assert "at most" in at.error[0].value
    at.text_area(key=TEXT_BOX).set_value("the cat sat")
    run(at)  # the page recovers
    assert graph(at) and not at.error


def test_tokens_are_escaped():
    at = open_page()
    at.text_area(key=TEXT_BOX).set_value(HOSTILE)
    at.slider(key="flow_threshold_box").set_value(0.01)
    run(at)
    spec = graph(at)
    labels = spec["layout"]["xaxis"]["ticktext"]
    assert any("&lt;" in t for t in labels) and not any("<" in t for t in labels)
    hover = " ".join(trace(spec, "nodes")["hovertext"] + trace(spec, "edges")["hovertext"])
    assert "&lt;" in hover and "<img" not in hover and "</script>" not in hover and "<b>x" not in hover


def test_a_family_found_by_the_anatomy_draws(tmp_path):
    """GPT-NeoX (parallel residual, fused per-head q/k/v) was refused before the anatomy."""
    model = tf.GPTNeoXForCausalLM(
        tf.GPTNeoXConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    )
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page(tmp_path)
    assert not at.warning and not at.error
    assert any(c.proto.spec for c in at.get("plotly_chart"))


def test_unsupported_family(tmp_path):
    model = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=40, d_model=32, n_layer=1, n_head=4, d_inner=64))
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page(tmp_path)
    assert "model type 'xlnet'" in at.warning[0].value  # says which model it cannot take apart
