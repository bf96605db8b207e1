"""Captures of the real embedded checkpoints (slow): grouped-query maps per query head, causal masks,
Gemma's sliding windows, readable tokens, and the logit lens against the model's own prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.attention import text_of
from explorer.analyses.hidden import logit_lens
from explorer.models.loading import LoadRequest, load_model
from explorer.runs.capture import capture

pytestmark = pytest.mark.slow

TEXT = "The cat sat on the mat because it was tired."


def test_smollm2_capture_has_one_map_per_query_head():
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    cap = capture(loaded, TEXT)
    n = len(cap.sequence)
    assert cap.sequence.tokens[:3] == ("The", "␣cat", "␣sat")
    assert cap.attentions.shape == (30, 9, n, n)  # 9 query heads, though only 3 key/value heads
    assert cap.hidden_states.shape == (31, n, 576)
    np.testing.assert_allclose(cap.attentions.sum(-1), 1.0, atol=1e-4)
    assert (cap.attentions[..., np.triu(np.ones((n, n), dtype=bool), k=1)] == 0).all()
    with torch.no_grad():
        logits = loaded.model(torch.tensor([cap.sequence.ids])).logits[0, -1]
    np.testing.assert_allclose(cap.next_token_logits, logits.numpy(), atol=1e-4)
    lens = logit_lens(loaded, cap, [n - 1])
    assert lens.top_ids[-1, 0, 0] == int(logits.argmax())


def test_gemma_sliding_layers_see_512_tokens_back():
    loaded = load_model(LoadRequest("embedded", "gemma-3-270m"))
    cap = capture(loaded, text_of(loaded.tokenizer, 600))
    assert cap.attentions.shape[:2] == (18, 4)
    assert cap.windows == tuple(None if (i + 1) % 6 == 0 else 512 for i in range(18))
    q, old = 599, np.arange(0, 599 - 511)  # keys more than 511 positions back
    sliding = [i for i, w in enumerate(cap.windows) if w]
    full = [i for i, w in enumerate(cap.windows) if not w]
    assert (cap.attentions[sliding][:, :, q, old] == 0).all()
    assert (cap.attentions[full][:, :, q, old] > 0).any()  # the full layers reach the first token
    np.testing.assert_allclose(cap.attentions[:, :, q].sum(-1), 1.0, atol=1e-4)
