"""The app in Streamlit's AppTest: the sidebar picker loads models and the Model page shows them."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from explorer import session
from explorer.serving.startup import CHARTS_WARMED
from tests.app.helpers import app, charts, load_folder, numbers, run


def card_table(at: AppTest) -> dict[str, str]:
    rows = at.table[0].value
    return dict(zip(rows["Property"], rows["Value"]))


def diagram(at: AppTest) -> dict:
    found = [c for c in charts(at) if "layers" in c["layout"]["title"]["text"]]
    assert len(found) == 1
    return found[0]


def test_first_visit_shows_the_default_model():
    at = app()
    assert at.title[0].value == "smollm2-135m-instruct"
    table = card_table(at)
    assert table["Layers"] == "30" and table["Query heads"] == "9" and table["Key/value heads"] == "3"
    assert table["Attention"].startswith("grouped-query")
    spec = diagram(at)
    texts = " ".join(a.get("text", "") for a in spec["layout"]["annotations"])
    assert "× 30" in texts and "Masked self-attention" in texts and "RMSNorm" in texts
    assert any("Loaded: smollm2-135m-instruct" in s.value for s in at.sidebar.success)
    bars = [c for c in charts(at) if c["layout"]["title"]["text"].startswith("Where the")][0]["data"][0]
    assert bars["type"] == "bar"
    groups = dict(zip(bars["y"], numbers(bars["x"])))
    assert sum(groups.values()) == 134_515_008 and groups["embeddings"] == 49152 * 576  # tied LM head


def test_load_an_encoder_decoder_folder(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("t5"))
    table = card_table(at)
    assert table["Family"] == "encoder-decoder"
    assert table["Encoder / decoder layers"] == "2 / 3"
    assert table["Position encoding"].startswith("relative position bias")
    texts = " ".join(a.get("text", "") for a in diagram(at)["layout"]["annotations"])
    assert "Cross-attention" in texts and "Encoder" in texts and "× 3" in texts


def test_the_hidden_chart_of_a_first_run_is_gone_when_the_run_ends(tiny_dir):
    at = app()  # a session's first run: a hidden chart warms the browser's Plotly code, then goes
    assert at.session_state[CHARTS_WARMED]
    assert len(charts(at)) == 2  # the Model page's own: the diagram and the parameter bars
    load_folder(at, tiny_dir("gpt2"))  # later runs send none, a wait for a model included
    titles = [c["layout"].get("title", {}).get("text", "") for c in charts(at)]
    assert len(titles) == 2 and titles[0].startswith("GPT2LMHeadModel") and titles[1].startswith("Where the")
    assert not at.get("html")  # nor its style (which Streamlit keeps apart, until the next run)


def test_bad_folder_keeps_the_previous_model(tmp_path, tiny_dir):
    at = app()
    load_folder(at, tiny_dir("bert"))
    assert card_table(at)["Family"] == "encoder"
    load_folder(at, tmp_path)
    assert "has no config.json" in at.sidebar.error[0].value
    assert card_table(at)["Family"] == "encoder"  # still the BERT card
    assert card_table(at)["Architecture class"] == "BertForMaskedLM"


def test_unload_frees_the_model(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("gpt2"))
    assert len(session.registry().loaded()) == 2  # the default model and this one
    unload = [b for b in at.sidebar.button if b.label == "Unload"]
    assert len(unload) == 2  # one per model in memory
    unload[1].click()
    run(at)
    assert [m.card.name for m in session.registry().loaded()] == ["smollm2-135m-instruct"]
    assert "No model is loaded" in at.info[0].value


def test_offline_hub_id_gets_a_message_quickly(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    at = app()
    at.radio(key=session.SOURCE).set_value("hub")
    run(at)
    at.text_input(key=session.HUB_ID).set_value("someone/not-a-cached-model")
    at.sidebar.button[0].click()
    started = time.perf_counter()
    run(at)
    assert time.perf_counter() - started < 3.0
    assert "cannot be reached" in at.sidebar.error[0].value
    assert at.title[0].value == "smollm2-135m-instruct"  # the page still shows the model it had


def test_cuda_without_cuda_is_refused_in_the_sidebar(tiny_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    at = app()
    at.selectbox(key=session.DEVICE).set_value("cuda")
    run(at)
    at.sidebar.button[0].click()
    run(at)
    assert "sees no CUDA GPU" in at.sidebar.error[0].value
