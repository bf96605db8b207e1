"""Experiments on the real embedded checkpoints (slow): SmolLM2's Paris heads and causal tracing, Gemma 3's
scan, the models left bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.analyses import experiments
from explorer.models.loading import LoadRequest, load_model

pytestmark = pytest.mark.slow

CLEAN, CORRUPT = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_scan_is_the_same_as_one_head_at_a_time_and_leaves_the_model_as_loaded(name):
    loaded = load_model(LoadRequest("embedded", name))
    probe = experiments.prepare(loaded, "The capital of France is")
    target = experiments.target_token(loaded, probe, " Paris")
    assert target.token == "␣Paris" and not target.note
    with torch.no_grad():
        before = loaded.model(**probe.inputs).logits
    scan = experiments.scan_heads(loaded, probe, target)
    worst = np.unravel_index(np.argmin(scan.delta_logprob), scan.delta_logprob.shape)
    assert scan.delta_logprob[worst] < -0.5  # some head matters for Paris
    for layer, head in [tuple(int(i) for i in worst), (0, 0), (5, 2)]:
        alone = experiments.ablate(loaded, probe, [(layer, head)], "zero", target)
        assert scan.delta_logprob[layer, head] == pytest.approx(alone.delta_logprob, abs=1e-3)
    with torch.no_grad():
        assert torch.equal(loaded.model(**probe.inputs).logits, before)


def test_causal_tracing_on_smollm2_restores_the_clean_run_at_the_first_layer():
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    clean, corrupt = experiments.patch_probes(loaded, CLEAN, CORRUPT)
    cache = experiments.cache_activations(loaded, clean, ("resid",))
    everything = list(range(len(corrupt.ids)))
    patched = experiments.patched_logits(loaded, corrupt, cache, "resid", [(0, everything)])
    torch.testing.assert_close(patched[0], experiments.clean_logits(loaded, clean), atol=1e-4, rtol=1e-4)
    result = experiments.patch(loaded, CLEAN, CORRUPT, " Paris", " Rome", kinds=("resid",))
    assert result.ld_clean > 0 > result.ld_corrupt  # Paris after the Eiffel Tower, Rome after the Colosseum
    resid = result.restored["resid"]
    assert resid[0, 0] == pytest.approx(0.0, abs=1e-5)  # 'The' is the same in both prompts
    assert resid[-1, -1] > 0.5  # at the top, the last position carries the answer
    assert resid[5, 1:4].sum() > 0.5  # early on, the subject's tokens do


@pytest.mark.slow
def test_the_date_normalizers_patching_example_traces_the_month():
    """Its example: November against December, read after '2026-1' (the month's second digit, 1 or 2)."""
    from explorer.models import zoo

    loaded = load_model(LoadRequest("embedded", "date-normalizer"))
    clean, corrupt, prefix, target, foil = zoo.ZOO["date-normalizer"].patching
    result = experiments.patch(loaded, clean, corrupt, target, foil, prefix=prefix)
    assert result.ld_clean > 0 > result.ld_corrupt  # 1 after November, 2 after December
