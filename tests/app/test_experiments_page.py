"""The Experiments page in AppTest: ablation and the head scan, patching, comparison, routing, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from explorer import session
from explorer.analyses import experiments
from explorer.models.loading import LoadRequest, load_model
from tests.app.helpers import app, charts, load_folder, numbers, run
from views import experiments as page

PAGE = "views/experiments.py"
TEXT = "the cat sat on the mat"


def open_page(folder, kind: str = page.KINDS[0]):
    at = app()
    load_folder(at, folder)
    at.session_state[page.EXPERIMENT] = kind
    at.switch_page(PAGE)
    return run(at)


def box(at, widget: str, key: str):
    return getattr(at, widget)(key=f"{key}_box")


def button(at, starts: str):
    return next(b for b in at.button if b.label.startswith(starts))


def z_of(spec: dict) -> np.ndarray:
    z = spec["data"][0]["z"]
    if isinstance(z, dict):
        shape = tuple(int(x) for x in str(z["shape"]).split(","))
        return np.array(numbers(z)).reshape(shape)
    return np.array(z, dtype=float)


def errors(at) -> str:
    return " ".join(e.value for e in at.error)


def test_ablation_and_head_scan(tiny_dir):
    at = open_page(tiny_dir("gpt2"))
    assert at.title[0].value == "Experiments"
    # with no target typed, the target is the model's own prediction for the workspace's text
    assert not errors(at) and any("the model's own prediction" in i.value for i in at.info)
    box(at, "text_area", page.ABL_TEXT).set_value(TEXT)
    box(at, "text_input", page.ABL_TARGET).set_value(" is")
    run(at)
    box(at, "multiselect", page.ABL_HEADS).set_value(["0.1", "1.3"])
    run(at)
    assert not at.error
    loaded = load_model(LoadRequest("folder", str(tiny_dir("gpt2"))))
    probe = experiments.prepare(loaded, TEXT)
    target = experiments.target_token(loaded, probe, " is")
    expected = experiments.ablate(loaded, probe, [(0, 1), (1, 3)], "zero", target)
    shown = {m.label: m for m in at.metric}
    assert shown["KL(before ‖ after)"].value == f"{expected.kl:.4f} nats"
    assert shown["after (2 heads off)"].value == f"{expected.after[target.token_id]:.3f}"
    bars = charts(at)[0]
    assert [t["name"] for t in bars["data"]] == ["all heads on", "heads knocked out"]

    button(at, "Scan all 8 heads").click()
    run(at)
    scan_chart = [c for c in charts(at) if "knocked out" in c["layout"]["title"]["text"]][-1]
    scan = experiments.scan_heads(loaded, probe, target, "zero")
    np.testing.assert_allclose(z_of(scan_chart), scan.delta_logprob, atol=1e-4)
    assert scan_chart["data"][0]["zmid"] == 0
    assert len(at.dataframe) == 1 and list(at.dataframe[0].value.columns)[:3] == [
        "layer",
        "head",
        "Δ log-prob",
    ]


def test_patching_draws_one_heatmap_per_kind_with_the_tokens(tiny_dir):
    at = open_page(tiny_dir("llama"), page.KINDS[1])
    box(at, "text_input", page.PATCH_CLEAN).set_value(TEXT)
    box(at, "text_input", page.PATCH_CORRUPT).set_value("the dog ran")
    box(at, "text_input", page.PATCH_TARGET).set_value(" is")
    box(at, "text_input", page.PATCH_FOIL).set_value(" was")
    run(at)
    assert "clean prompt is 6 tokens" in errors(at) and "corrupted one 3" in errors(at)
    box(at, "text_input", page.PATCH_CORRUPT).set_value("the dog ran to the park")
    run(at)
    assert not at.error
    button(at, "Patch 36").click()  # 2 layers x 6 positions x 3 kinds
    run(at)
    figs = charts(at)
    assert len(figs) == 3
    loaded = load_model(LoadRequest("folder", str(tiny_dir("llama"))))
    result = experiments.patch(loaded, TEXT, "the dog ran to the park", " is", " was")
    for fig, kind in zip(figs, experiments.KINDS):
        np.testing.assert_allclose(z_of(fig), result.restored[kind], atol=1e-4)
        assert fig["layout"]["xaxis"]["ticktext"] == ["the", "dog", "ran", "to", "the", "park"]
        assert fig["data"][0]["zmin"] == -fig["data"][0]["zmax"]


def test_compare_loads_a_second_model_and_keeps_the_users(tiny_dir):
    at = open_page(tiny_dir("gpt2"), page.KINDS[2])
    assert any("Load a second model" in i.value for i in at.info)
    box(at, "selectbox", page.CMP_SOURCE).set_value("folder")
    run(at)
    box(at, "text_input", f"{page.CMP_REF}_folder").set_value(str(tiny_dir("llama")))
    button(at, "Load second model").click()
    run(at)
    box(at, "text_area", page.CMP_TEXT).set_value(TEXT)
    run(at)
    assert at.session_state[session.REQUEST].ref == str(tiny_dir("gpt2"))  # the user's model is unchanged
    figs = charts(at)
    assert [t["type"] for t in figs[0]["data"]] == ["bar", "bar"]
    assert len(figs) == 3  # distributions, then one attention map per model
    titles = [f["layout"]["title"]["text"] for f in figs[1:]]
    assert all("layer 0, head 0" in t for t in titles)
    box(at, "selectbox", f"{page.CMP_LAYER}_1").set_value(1)
    box(at, "selectbox", f"{page.CMP_HEAD}_1").set_value(3)
    run(at)
    titles = [f["layout"]["title"]["text"] for f in charts(at)[1:]]
    assert "layer 0, head 0" in titles[0] and "layer 1, head 3" in titles[1]


def test_routing_says_when_a_model_has_no_experts(tiny_dir):
    at = open_page(tiny_dir("llama"), page.KINDS[3])
    assert any("this model has no experts" in i.value for i in at.info)


def test_routing_on_a_tiny_mixtral(tmp_path):
    import torch
    import transformers as tf

    from tests.conftest import VOCAB, tiny_tokenizer

    torch.manual_seed(0)
    config = tf.MixtralConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=64,
    )  # fmt: skip
    tf.MixtralForCausalLM(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page(tmp_path, page.KINDS[3])
    box(at, "text_area", page.ROUTE_TEXT).set_value(TEXT)
    run(at)
    routed, usage = charts(at)
    weights = z_of(routed)
    assert weights.shape == (6, 4)
    assert np.allclose(weights.sum(1), 1.0, atol=1e-5) and ((weights > 0).sum(1) == 2).all()
    assert z_of(usage).sum(1).tolist() == [12, 12]
    at.session_state[page.EXPERIMENT] = page.KINDS[0]  # ablation takes a mixture of experts apart too
    run(at)
    assert not any("not one of the families" in w.value for w in at.warning) and not at.exception
    box(at, "text_area", page.ABL_TEXT).set_value("the cat sat on the")
    box(at, "text_input", page.ABL_TARGET).set_value(" mat")
    run(at)
    assert not at.error and any("Head scan" in h.value for h in at.subheader)


@pytest.mark.parametrize("kind", ["bert"])
def test_encoder_without_lm_head_is_refused_clearly(tmp_path, kind):
    import transformers as tf

    from tests.conftest import tiny_config, tiny_tokenizer

    tf.BertModel(tiny_config(kind)).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    at = open_page(tmp_path)
    assert any("no language-model head" in w.value for w in at.warning)
    at.session_state[page.EXPERIMENT] = page.KINDS[1]
    run(at)
    assert any("no language-model head" in w.value for w in at.warning)


def test_encoder_decoder_reads_the_decoder_after_a_prefix(tiny_dir):
    at = open_page(tiny_dir("t5"))
    box(at, "text_area", page.ABL_TEXT).set_value(TEXT)
    box(at, "text_input", page.ABL_PREFIX).set_value("the dog")
    box(at, "text_input", page.ABL_TARGET).set_value(" ran")
    run(at)
    assert not at.error
    assert box(at, "radio", page.ABL_STACK).options == ["encoder", "decoder"]
    box(at, "radio", page.ABL_STACK).set_value("decoder")
    run(at)
    box(at, "multiselect", page.ABL_HEADS).set_value(["2.3"])  # the tiny T5's decoder has 3 layers
    run(at)
    loaded = load_model(LoadRequest("folder", str(tiny_dir("t5"))))
    probe = experiments.prepare(loaded, TEXT, "the dog", "decoder")
    target = experiments.target_token(loaded, probe, " ran")
    expected = experiments.ablate(loaded, probe, [(2, 3)], "zero", target)
    shown = {m.label: m for m in at.metric}
    assert shown["KL(before ‖ after)"].value == f"{expected.kl:.4f} nats"
    assert "token 2 (dog)" in " ".join(c.value for c in at.caption)


@pytest.mark.parametrize(
    "text, target, message",
    [
        ("   ", " is", "The text is empty"),
        ("the cat " * 200, " is", "The text is 400 tokens long"),
        (TEXT, " <img src=x onerror=alert(1)>", "not in this model's vocabulary"),
    ],
)
def test_bad_input_gets_a_message_and_the_page_keeps_working(tiny_dir, text, target, message):
    at = open_page(tiny_dir("gpt2"))
    box(at, "text_area", page.ABL_TEXT).set_value(text)
    box(at, "text_input", page.ABL_TARGET).set_value(target)
    run(at)
    assert message in errors(at)
    box(at, "text_area", page.ABL_TEXT).set_value(TEXT)
    box(at, "text_input", page.ABL_TARGET).set_value(" is tired")
    run(at)
    assert not at.error
    assert any("is 2 tokens" in i.value and "first token" in i.value for i in at.info)
    assert len(charts(at)) == 1


def test_a_link_to_a_head_scan_shows_it_from_the_server_or_says_it_will_run(tiny_dir):
    from tests.app.test_links import opened

    at = open_page(tiny_dir("gpt2"))
    box(at, "text_area", page.ABL_TEXT).set_value(TEXT)
    box(at, "text_input", page.ABL_TARGET).set_value(" mat")
    run(at)
    button(at, "Scan all 8 heads").click()
    run(at)
    mine = [c for c in charts(at) if "knocked out" in c["layout"]["title"]["text"]][-1]
    link = dict(at.query_params)
    other = opened(link, PAGE)  # someone else's browser: the scan is in the server's store
    theirs = [c for c in charts(other) if "knocked out" in c["layout"]["title"]["text"]]
    assert theirs and np.array_equal(z_of(theirs[-1]), z_of(mine))
    link["ablate_target"] = " cat"  # a scan nobody has run here
    third = opened(link, PAGE)
    assert not [c for c in charts(third) if "knocked out" in c["layout"]["title"]["text"]]
    assert any("Not run on this server" in c.value for c in third.caption)


def test_the_ablation_reads_the_workspace_text_and_follows_the_models_prediction(tiny_dir):
    at = app()
    load_folder(at, tiny_dir("gpt2"))
    at.session_state[session.TEXT] = TEXT  # typed on another page
    at.session_state[page.EXPERIMENT] = page.KINDS[0]
    at.switch_page(PAGE)
    run(at)
    assert box(at, "text_area", page.ABL_TEXT).value == TEXT
    loaded = load_model(LoadRequest("folder", str(tiny_dir("gpt2"))))
    probe = experiments.prepare(loaded, TEXT)
    best = int(experiments.clean_logits(loaded, probe).argmax())
    assert any(f"(id {best})" in c.value for c in at.caption)  # the target read is the model's top token


def test_patching_opens_on_the_models_own_example():
    at = app(timeout=120)
    at.session_state[page.EXPERIMENT] = page.KINDS[1]
    at.switch_page(PAGE)
    run(at)
    assert box(at, "text_input", page.PATCH_CLEAN).value == "The Eiffel Tower is in the city of"
    at.session_state[session.EMBEDDED] = "date-normalizer"
    run(at)
    at.sidebar.button[0].click()
    run(at)
    assert box(at, "text_input", page.PATCH_CORRUPT).value == "Tuesday, 23rd December 2026"
    assert box(at, "text_input", page.PATCH_PREFIX).value == "2026-1"
    assert (box(at, "text_input", page.PATCH_TARGET).value, box(at, "text_input", page.PATCH_FOIL).value) == (
        "1",
        "2",
    )
    assert not at.error


def test_attribution_patching_is_drawn_beside_exact_patching(tiny_dir):
    at = open_page(tiny_dir("llama"), page.KINDS[1])
    box(at, "text_input", page.PATCH_CLEAN).set_value(TEXT)
    box(at, "text_input", page.PATCH_CORRUPT).set_value("the dog ran to the park")
    box(at, "text_input", page.PATCH_TARGET).set_value(" is")
    box(at, "text_input", page.PATCH_FOIL).set_value(" was")
    run(at)
    button(at, "Patch 36").click()
    run(at)
    box(at, "toggle", page.PATCH_APPROX).set_value(True)
    run(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert sum(t.endswith(", approximated") for t in titles) == 3 and len(titles) == 6
    assert sum("correlation of the approximation with exact patching" in c.value for c in at.caption) == 3
