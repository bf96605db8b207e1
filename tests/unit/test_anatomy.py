"""The anatomy finds every part of every architecture: checked against what the model itself computes in
one hooked run (the heads' outputs are A·V of the value projection the anatomy names; the residual
updates it names add up to each block's output; hooks leave the model as it was)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

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


class _Attention(torch.nn.Module):
    """A made-up family's attention: fused `Wqkv` [q | k | v], output `out`, causal."""

    def __init__(self, d: int, heads: int, seen: dict):
        super().__init__()
        self.Wqkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.num_heads, self.head_dim, self.scaling, self.seen = heads, d // heads, (d // heads) ** -0.5, seen

    def forward(self, hidden_states):
        n, d = hidden_states.shape[1], hidden_states.shape[2]
        q, k, v = (
            t.view(1, n, self.num_heads, -1).transpose(1, 2) for t in self.Wqkv(hidden_states).split(d, -1)
        )
        scores = (q @ k.transpose(-1, -2)) * self.scaling
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        self.seen[id(self)] = a = scores.softmax(-1)  # (1, head, q, k)
        return self.out((a @ v).transpose(1, 2).reshape(1, n, d))


class _Ffn(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w1, self.w2, self.act = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d), torch.nn.GELU()

    def forward(self, x):
        return self.w2(self.act(self.w1(x)))


class _Block(torch.nn.Module):
    def __init__(self, d: int, seen: dict):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn = _Attention(d, 4, seen)
        self.ff = _Ffn(d)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class _MyModel(torch.nn.Module):
    """The README's example family ("Adding a family"), small enough to write here."""

    def __init__(self, seen: dict, d: int = 32, vocab: int = 40):
        super().__init__()
        self.config = SimpleNamespace(model_type="mymodel", num_hidden_layers=2, is_encoder_decoder=False)
        self.embed = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(_Block(d, seen) for _ in range(2))
        self.norm_f, self.lm_head = torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))


def test_adding_a_family_is_the_readme_s_few_lines(monkeypatch):
    from explorer.models.styles import FUSED, PLAIN_FFN, STYLES, Style

    seen: dict = {}
    model = _MyModel(seen).eval()
    with pytest.raises(anatomy.UnsupportedModel, match="feed-forward network"):  # no common name for `ff`
        anatomy.build(model)
    monkeypatch.setitem(STYLES, "mymodel", Style(  # the README's lines
        layers={"decoder": "blocks"}, attn="attn", **FUSED, qkv="attn.Wqkv", layout="concat", o="attn.out",
        attn_norm="norm1", ffn_norm="norm2", ffn="ff", up="ff.w1", **PLAIN_FFN, down="ff.w2", act="ff.act",
        final_norm={"decoder": "norm_f"},
    ))  # fmt: skip
    a = anatomy.build(model)
    assert a.style == "mymodel" and a.stacks["decoder"].final_norm is model.norm_f
    kept: dict = {}
    hooks = [hooked.keep(kept, i, b.attn.o, "pre") for i, b in enumerate(a.blocks("decoder"))]
    hooks += [hooked.keep(kept, ("x", i), b.attn.module, "pre") for i, b in enumerate(a.blocks("decoder"))]
    loaded = SimpleNamespace(model=model, lock=threading.RLock())
    hooked.run(loaded, {"input_ids": torch.tensor([IDS])}, hooks)
    for i, b in enumerate(a.blocks("decoder")):
        att = b.attn
        v = att.v(kept[("x", i)].float()).view(len(IDS), att.n_heads, att.d_head).transpose(0, 1)
        expected = (seen[id(att.module)][0] @ v).transpose(0, 1).reshape(len(IDS), -1)
        torch.testing.assert_close(kept[i], expected, atol=1e-5, rtol=1e-4)
