"""Mixtures of experts: the anatomy finds their attention and their expert layers; every analysis that does
not read one FFN's neurons (from-scratch attention, ablation, patching, flow, routing) works on them, and
FFN memory says why it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.analyses import experiments, ffn, flow, scratch
from explorer.models import anatomy
from explorer.runs import hooked
from tests.conftest import MOE_KINDS, load_as_folder, no_hooks, tiny_moe

TEXT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """kind -> the tiny mixture of experts saved like a user's folder and loaded by explorer.loading."""
    made = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = load_as_folder(tiny_moe(kind).model, tmp_path_factory.mktemp(kind))
        return made[kind]

    return get


@pytest.mark.parametrize("kind", MOE_KINDS)
def test_the_anatomy_marks_the_experts_and_attention_is_exact(moe, kind):
    loaded = moe(kind)
    a = anatomy.of(loaded.model)
    assert all(b.ffn.experts for b in a.blocks("decoder"))
    assert all(b.ffn_out is b.ffn.entry for b in a.blocks("decoder"))  # the mixture's output is the update
    result = scratch.verify(loaded, TEXT)
    assert result["max_abs_diff"] <= result["tolerance"]


@pytest.mark.parametrize("kind", MOE_KINDS)
def test_ablation_and_patching_run_and_leave_the_model_as_it_was(moe, kind):
    loaded = moe(kind)
    probe = experiments.prepare(loaded, TEXT)
    before = experiments.clean_logits(loaded, probe)
    none = experiments.ablated_logits(loaded, probe, [[]])[0]
    assert torch.equal(none, before)  # knocking out no head changes nothing
    one = experiments.ablated_logits(loaded, probe, [[(1, 2)]])[0]
    assert not torch.equal(one, before)
    cache = experiments.cache_activations(loaded, probe)
    for kind_ in experiments.KINDS:  # patching the prompt into itself changes nothing
        got = experiments.patched_logits(loaded, probe, cache, kind_, [(1, list(range(len(probe.ids))))])[0]
        assert torch.equal(got, before), kind_
    assert no_hooks(loaded.model)
    assert torch.equal(experiments.clean_logits(loaded, probe), before)


@pytest.mark.parametrize("kind", MOE_KINDS)
def test_flow_decomposes_the_residual_and_ffn_memory_says_why_not(moe, kind):
    loaded = moe(kind)
    result = flow.compute(loaded, TEXT)
    k = result.sublayers.index(flow.FFN)
    shares = result.residual[:, k] + result.ffn  # (layer, pos): the residual and the mixture's output
    np.testing.assert_allclose(shares, 1.0, atol=1e-5)
    with pytest.raises(anatomy.UnsupportedModel, match="mixture of experts"):
        ffn.capture(loaded, TEXT)
    with pytest.raises(anatomy.UnsupportedModel, match="mixture of experts"):
        flow.top_neurons(loaded, result, 0, 1)


def test_inputs_are_built_once_for_every_analysis(moe):
    loaded = moe("mixtral")
    ids = hooked.encode(loaded.model, loaded.tokenizer, TEXT)
    assert hooked.inputs(loaded.model, ids)["input_ids"].tolist() == [ids]
