"""The Features page and feature steering on the Generate page, in AppTest, on a tiny Llama with a small
SAE trained on it (explorer.sae.train's own steps)."""

from __future__ import annotations

import numpy as np
import pytest

from explorer import session
from explorer.sae import features, train
from tests.app.helpers import app, charts, load_folder, numbers, run

TEXT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def sae_dir(tiny_loaded, tmp_path_factory):
    """A TopK SAE on the tiny Llama's layer 1, saved with its top contexts."""
    from safetensors.torch import save_file

    loaded = tiny_loaded("llama")
    ids = train.sequences(loaded.tokenizer, [TEXT, "the dog was not tired"] * 30, 500)
    x = train.stream_at(loaded, ids, 1)[:, 1:].reshape(-1, 32)
    sae, _ = train.train(x, train.TrainConfig(d_sae=48, k=4, epochs=2, batch=128), log=lambda s: None)
    sae.layer = 1
    folder = tmp_path_factory.mktemp("sae")
    sae.save(folder, model_name="tiny llama")
    save_file({k: v.contiguous() for k, v in train.top_contexts(sae, x, ids).items()},
              folder / features.CONTEXTS)  # fmt: skip
    return folder


def open_features(tiny_dir, folder=None):
    at = app()
    load_folder(at, tiny_dir("llama"))
    at.session_state[session.TEXT] = TEXT
    if folder is not None:
        at.session_state[session.FEAT_SAE] = str(folder)
    at.switch_page("views/features.py")
    return run(at)


def z_of(spec) -> np.ndarray:
    z = spec["data"][0]["z"]
    return np.array(numbers(z) if isinstance(z, dict) else [numbers(r) for r in z], dtype=float)


def test_the_features_of_each_token_and_a_dashboard(tiny_dir, tiny_loaded, sae_dir):
    from explorer.sae.sae import load

    at = open_features(tiny_dir, sae_dir)
    assert not at.error
    want = features.on_text(tiny_loaded("llama"), load(sae_dir), TEXT)
    spec = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("The strongest features"))
    rows = [int(r.split()[0].lstrip("#")) for r in spec["data"][0]["y"]]
    shown = z_of(spec).reshape(len(rows), len(want.tokens))
    assert np.allclose(shown, want.acts[:, rows].T, atol=1e-5)
    last = len(want.tokens) - 1
    top = want.top(last)
    assert any(c["layout"]["title"]["text"].startswith("Features firing on") for c in charts(at))
    assert at.session_state[session.FEATURE] == top[0][0]  # the dashboard opens the token's strongest
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert "Tokens it promotes (logit weight)" in titles and any(
        t.startswith("Its activations") for t in titles
    )
    assert any("Where it fires most" in m.value for m in at.markdown)
    assert at.query_params["feature"] == str(top[0][0])


def test_searching_features_by_a_token_they_promote(tiny_dir, tiny_loaded, sae_dir):
    from explorer.sae.sae import load

    at = open_features(tiny_dir, sae_dir)
    at.text_input(key="feat_find_token").set_value(" tired")
    run(at)
    loaded = tiny_loaded("llama")
    hits = features.search_by_token(loaded, features.logit_weights(loaded, load(sae_dir)), " tired")
    line = next(m.value for m in at.markdown if m.value.startswith("Features that promote it most"))
    assert line.split(": ", 1)[1].startswith(f"#{hits[0][0]} ")


def test_what_cannot_be_read_gets_a_message(tiny_dir, tmp_path):
    at = open_features(tiny_dir)
    assert any("No SAE was trained here" in m.value for m in at.info)
    at = open_features(tiny_dir, tmp_path)
    assert any("SAELens' layout" in e.value for e in at.error)
    at = app()
    load_folder(at, tiny_dir("bert"))
    at.switch_page("views/features.py")
    run(at)
    assert any("is not a decoder" in m.value for m in at.info)


def test_feature_steering_on_the_generate_page(tiny_dir, sae_dir):
    at = open_features(tiny_dir, sae_dir)
    feature = at.session_state[session.FEATURE]
    next(b for b in at.button if b.label.startswith("Steer generation with feature")).click()
    run(at)
    assert at.session_state[session.GEN_FEAT_STEER] and at.session_state[session.GEN_FEAT] == feature
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert f"The same candidates, steered and not (+ 8 × feature #{feature} at layer 1)" in titles
    at.number_input(key=f"{session.GEN_FEAT_VALUE}_box").set_value(0.0)  # adding nothing: the same numbers
    at.switch_page("views/generate.py")  # AppTest reruns the page it was told, not the one switched to
    run(at)
    paired = next(c for c in charts(at) if c["layout"]["title"]["text"].startswith("The same candidates"))
    steered, plain = (numbers(bar["x"]) for bar in paired["data"][:2])
    assert np.allclose(steered, plain, atol=1e-6)


def test_searching_features_by_a_word_in_their_top_contexts(tiny_dir, tiny_loaded, sae_dir):
    from explorer.sae.sae import load

    at = open_features(tiny_dir, sae_dir)
    at.text_input(key="feat_find_word").set_value("dog")
    run(at)
    contexts = features.saved_contexts(load(sae_dir))
    texts = features.context_texts(tiny_loaded("llama"), contexts)
    want = [f for f in range(len(texts)) if "dog" in texts[f]]
    line = next(m.value for m in at.markdown if m.value.startswith("Features with it in their top contexts"))
    shown = [int(x.strip().lstrip("#")) for x in line.split(": ", 1)[1].split(",")]
    assert shown and set(shown) <= set(want)
    counts = [texts[f].count("dog") for f in shown]
    assert counts == sorted(counts, reverse=True)  # most hits first


def test_a_tokens_feature_opens_its_dashboard(tiny_dir, tiny_loaded, sae_dir):
    at = open_features(tiny_dir, sae_dir)
    buttons = [b for b in at.button if b.label.startswith("Open #")]
    assert buttons
    last = buttons[-1]
    last.click()
    run(at)
    assert at.session_state[session.FEATURE] == int(last.label.removeprefix("Open #"))
    assert at.query_params["feature"] == last.label.removeprefix("Open #")
