"""The anatomy finds every part of every architecture: checked against what the model itself computes in
one hooked run (the heads' outputs are A·V of the value projection the anatomy names; the residual
updates it names add up to each block's output; hooks leave the model as it was)."""

from __future__ import annotations

import pytest
import torch

from explorer.models import anatomy
from explorer.runs import hooked
from tests.conftest import ARCHITECTURES, FAMILIES, no_hooks

IDS = [2, 7, 8, 9, 10, 11, 7, 12, 13, 3]  # "[CLS] the cat sat on mat the because it [SEP]"


def _maps(out, kind: str):
    if kind == "cross":
        return out.cross_attentions
    if hasattr(out, "encoder_attentions") and out.encoder_attentions is not None:
        return out.encoder_attentions if kind == "encoder" else out.decoder_attentions
    return out.attentions


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_heads_are_softmax_weights_times_the_named_values(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    model, a = loaded.model, anatomy.of(loaded.model)
    seen: dict = {}
    hooks = []
    for name in a.attention_kinds:
        stack = "decoder" if name == "cross" else name
        for i in range(a.n_layers(stack)):
            att = a.attention(name, i)
            call = i if a.stacks[stack].shared_blocks else None
            hooks.append(hooked.keep(seen, (name, "x", i), att.module, "pre", call))
            hooks.append(hooked.keep(seen, (name, "o", i), att.o, "pre", call))
    out = hooked.run(
        loaded, hooked.inputs(model, IDS), hooks, output_attentions=True, **hooked.options(model)
    )
    for name in a.attention_kinds:
        stack = "decoder" if name == "cross" else name
        for i in range(a.n_layers(stack)):
            att = a.attention(name, i)
            x = out.encoder_last_hidden_state[0] if name == "cross" else seen[(name, "x", i)]
            v = att.v(x.float())  # (src, kv_head * d_head)
            v = v.view(v.shape[0], att.n_kv_heads, att.d_head).transpose(0, 1)
            v = v.repeat_interleave(att.group, 0)  # (head, src, d_head)
            maps = _maps(out, name)[i][0].float()  # (head, q, k)
            expected = (maps @ v).transpose(0, 1).reshape(maps.shape[1], -1)
            torch.testing.assert_close(seen[(name, "o", i)].float(), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_anatomy_agrees_with_the_config(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    a = anatomy.of(loaded.model)
    assert anatomy.of(loaded.model) is a  # built once per model
    family = FAMILIES[kind]
    assert a.stack_names == {"encoder": ("encoder",), "decoder": ("decoder",)}.get(
        family, ("encoder", "decoder")
    )
    for stack in a.stacks.values():
        assert stack.causal == (stack.name == "decoder")
        for b in stack.blocks:
            att = b.attn
            assert att.n_heads % att.n_kv_heads == 0
            assert att.q.weight().shape[0] == att.n_heads * att.d_head
            assert att.k.weight().shape[0] == att.v.weight().shape[0] == att.n_kv_heads * att.d_head
            assert b.ffn.up.weight().shape[0] == anatomy.Proj(b.ffn.down).weight().shape[1]
    assert a.unembed is not None


def test_a_hook_that_raises_leaves_the_model_unchanged(tiny_loaded):
    loaded = tiny_loaded("llama")
    model = loaded.model
    a = anatomy.of(model)
    before = hooked.run(loaded, hooked.inputs(model, IDS)).logits

    def boom(x):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError):
        hooked.run(
            loaded, hooked.inputs(model, IDS), [hooked.Hook(a.blocks("decoder")[1].attn.o, "pre", boom)]
        )
    assert no_hooks(model)
    assert torch.equal(hooked.run(loaded, hooked.inputs(model, IDS)).logits, before)


def test_a_shared_block_is_hooked_per_layer(tiny_loaded):
    """ALBERT reuses one block: a hook for layer 1 acts on the block's second call only."""
    loaded = tiny_loaded("albert")
    model, a = loaded.model, anatomy.of(loaded.model)
    assert a.stacks["encoder"].shared_blocks
    seen: dict = {}
    blocks = a.blocks("encoder")
    hooks = [hooked.keep(seen, i, b.module, "pre", call=i) for i, b in enumerate(blocks)]
    out = hooked.run(loaded, hooked.inputs(model, IDS), hooks, output_hidden_states=True)
    for i in range(len(blocks)):
        torch.testing.assert_close(seen[i], out.hidden_states[i][0])
