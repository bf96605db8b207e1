"""Attribution patching equals exact patching where the logit difference is linear in the patched
activation, and approximates it elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from explorer.analyses import atp, experiments
from tests.conftest import VOCAB, load_as_folder

CLEAN, CORRUPT = "the cat sat on the mat", "the dog sat on the mat"


@pytest.fixture(scope="module")
def linear_head(tmp_path_factory):
    """A tiny GPT-2 whose final LayerNorm is taken out: the logits are a linear map of the residual stream,
    so the logit difference is linear in what the last layer's FFN adds."""
    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=4, n_positions=64)
    loaded = load_as_folder(tf.GPT2LMHeadModel(config), tmp_path_factory.mktemp("atp-gpt2"))
    loaded.model.transformer.ln_f = torch.nn.Identity()
    return loaded


def test_equal_to_exact_patching_where_the_model_is_linear(linear_head):
    exact = experiments.patch(linear_head, CLEAN, CORRUPT, " tired", " dog")
    approx = atp.approximate(linear_head, CLEAN, CORRUPT, " tired", " dog")
    assert approx.ld_corrupt == pytest.approx(exact.ld_corrupt, abs=1e-5)
    last = exact.restored["mlp"].shape[0] - 1
    assert np.allclose(approx.restored["mlp"][last], exact.restored["mlp"][last], atol=1e-4)
    assert abs(exact.restored["mlp"][last, -1]) > 1e-3  # the comparison is not of zeros


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_an_estimate_of_every_cell(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    exact = experiments.patch(loaded, CLEAN, CORRUPT, " tired", " dog", prefix="the")
    approx = atp.approximate(loaded, CLEAN, CORRUPT, " tired", " dog", prefix="the")
    for k in experiments.KINDS:
        assert approx.restored[k].shape == exact.restored[k].shape
        assert np.isfinite(approx.restored[k]).all()
    # the exact patch of layer 0's input at the one position that differs restores the clean run
    assert exact.restored["resid"][0, 1] == pytest.approx(1.0, abs=1e-4)
