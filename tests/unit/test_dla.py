"""Direct logit attribution: the parts add up to the model's own logit difference on every family whose
blocks only add to the residual stream; post-norm models and masked-LM heads are refused."""

from __future__ import annotations

import json

import pytest

from explorer.__main__ import main as cli
from explorer.analyses import dla
from explorer.models.anatomy import UnsupportedModel

TEXT = "the cat sat on the mat because it was"
ADDING = ["llama", "gpt2", "t5", "gpt_neox", "opt", "mistral", "qwen3", "phi3", "olmo2", "gemma3_text",
          "bloom", "gptj", "falcon", "phi", "mbart", "cohere", "starcoder2", "gpt_bigcode",
          "biogpt"]  # fmt: skip
REFUSED = {"bert": "masked-LM|normalizes", "bart": "normalizes", "marian": "normalizes",
           "distilbert": "masked-LM|normalizes", "gemma2": "soft-caps"}  # fmt: skip


@pytest.mark.parametrize("kind", ADDING)
def test_the_parts_sum_to_the_models_logit_difference(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    found = dla.attribute(loaded, TEXT, " tired", " dog", prefix="the")
    assert found.total == pytest.approx(found.logit_diff, abs=1e-4)
    names = {p.name for p in found.parts}
    assert {"embeddings", "head", "ffn"} <= names
    n_heads = (
        loaded.model.config.num_attention_heads if hasattr(loaded.model.config, "num_attention_heads") else 4
    )
    assert found.heads().shape[1] == n_heads


def test_without_a_foil_the_parts_sum_to_the_targets_logit(tiny_loaded):
    found = dla.attribute(tiny_loaded("llama"), TEXT, " tired")
    assert found.foil is None and found.total == pytest.approx(found.logit_diff, abs=1e-4)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_what_is_not_a_sum_of_parts_is_refused(tiny_loaded, kind):
    with pytest.raises(UnsupportedModel, match=REFUSED[kind]):
        dla.attribute(tiny_loaded(kind), TEXT, " tired", prefix="the")


def test_the_command_prints_one_object(tiny_dir, capsys):
    assert (
        cli(["dla", str(tiny_dir("gpt2")), "--text", TEXT, "--target", " tired", "--foil", " dog", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"total", "parts", "logit_diff"}
    assert abs(out["total"] - out["logit_diff"]) < 1e-4
    assert sum(p["value"] for p in out["parts"]) == pytest.approx(out["total"])
    assert {"name", "layer", "head", "value"} == set(out["parts"][0])
