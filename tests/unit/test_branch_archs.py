"""One pass branched at a block (hooked.branch: what the SAE's model card uses for its clean, spliced and
zeroed runs) gives the logits of the separate passes, on a tiny model of every architecture (in the stack
that makes the output: an encoder-decoder's decoder), with a batch of two texts."""

from __future__ import annotations

import pytest
import torch

from explorer.models import anatomy
from explorer.runs import hooked
from tests.conftest import ARCHITECTURES, FAMILIES, no_hooks, tiny_tokenizer

# The model code computes a shape from its input's batch: the branch fails loudly there (features.evaluate
# then makes three passes).
CANNOT = {
    "bloom": "its ALiBi tensor has batch x heads rows",
    "gpt_bigcode": "it reshapes the last hidden states to the input's batch",
}
VERSIONS = (
    lambda x: x,
    lambda x: torch.cat([x[:, :1], 0.5 * x[:, 1:] + 0.1], 1),
    lambda x: torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1),
)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_a_branched_pass_equals_the_separate_passes(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    model = loaded.model
    tok = tiny_tokenizer()
    rows = [tok("the cat sat on the mat")["input_ids"], tok("a dog ran to the park")["input_ids"]]
    n = min(map(len, rows))
    ids = torch.tensor([r[:n] for r in rows])
    inputs = {"input_ids": ids}
    if FAMILIES[kind] == "encoder-decoder":
        start = hooked.decoder_start(model)
        inputs["decoder_input_ids"] = torch.tensor([[start, 5, 6, 7]] * 2)
    a = anatomy.of(model)
    blocks = [b.module for b in a.stacks[a.output_stack].blocks]
    shared = a.stacks[a.output_stack].shared_blocks
    at = len(blocks) // 2 if not shared else 0
    call = 1 if shared else None  # ALBERT: the second call of its one block
    later = blocks[:1] if shared else blocks[at + 1 :]

    def branched(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([v(x) for v in VERSIONS])

    hooks = hooked.branch(blocks[at], later, branched, 2, 3, call)
    if kind in CANNOT:
        with pytest.raises(RuntimeError):
            hooked.run(loaded, inputs, hooks, use_cache=False)
        assert no_hooks(model)
        return
    out = hooked.run(loaded, inputs, hooks, use_cache=False)
    got = out.logits.split(2)
    for version, logits in zip(VERSIONS, got):
        alone = hooked.run(loaded, inputs, [hooked.Hook(blocks[at], "pre", version, call)], use_cache=False)
        torch.testing.assert_close(logits, alone.logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[0], got[2]), "the versions differ: the branch is not a no-op"
    assert no_hooks(model)
