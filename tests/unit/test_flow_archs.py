"""Information flow on every architecture: importances are distributions; the head x source pieces (with
the output bias shared out, times the post-norm scale where the model normalizes a sub-layer's output) add
up to the residual update the model computed, captured here with plain hooks; the stream between blocks is
the model's hidden states; the logit lens of the last node is the model's prediction; a parallel block's
FFN leads the routes to the block's input."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from explorer.analyses import flow
from explorer.figures.flow import graph
from explorer.models import anatomy
from explorer.runs import hooked
from tests.conftest import ARCHITECTURES, FAMILIES

TEXT = "the cat sat on the mat because it was tired"
TARGET = "the cat sat"


def _target(kind: str) -> str | None:
    return TARGET if FAMILIES[kind] == "encoder-decoder" else None


def _with_random_norms(loaded):
    """A copy whose norm weights are far from their initial ones and zeros, so that a post-norm read as
    `weight` where the model applies `1 + weight` (or the other way round) shows."""
    model = copy.deepcopy(loaded.model)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "norm" in name and p.dim() == 1:
            p.data.normal_(0, 0.5)
    return replace(loaded, model=model)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_importances_streams_and_lens(tiny_loaded, kind):
    lm = tiny_loaded(kind)
    f = flow.compute(lm, TEXT, target=_target(kind))
    assert f.residual.min() >= 0 and f.ffn.min() >= 0
    for k, sub in enumerate(f.sublayers):
        others = f.ffn if sub == flow.FFN else f.edges[sub].sum(-1)  # (layer, pos)
        np.testing.assert_allclose(f.residual[:, k] + others, 1.0, atol=1e-5)
        if sub != flow.FFN:
            assert f.edges[sub].min() >= 0 and f.heads[sub].min() >= 0
            np.testing.assert_allclose(f.heads[sub].sum(1), f.edges[sub], atol=1e-5)
    # the stream entering each block is the model's own hidden state
    model = lm.model
    enc_dec = f.source_ids is not None
    decoder_ids = list(f.ids) if enc_dec else None
    with torch.no_grad():
        out = model(
            **hooked.inputs(model, list(f.source_ids or f.ids), decoder_ids), output_hidden_states=True
        )
    hidden = out.decoder_hidden_states if enc_dec else out.hidden_states
    expected = torch.stack(hidden[: f.n_layers])[:, 0].float().numpy()
    np.testing.assert_allclose(f.residuals[:-1], expected, atol=1e-5)
    # the captured FFN input and output agree with the anatomy's FFN (OPT flattens its positions)
    net = anatomy.of(model).blocks(f.stack)[0].ffn
    down = anatomy.Proj(net.down)
    acts = net.activations(torch.from_numpy(f.ffn_inputs[0]))
    torch.testing.assert_close(down(acts), torch.from_numpy(f.ffn_outputs[0]), atol=1e-5, rtol=1e-4)
    # every neuron's share of the FFN output at the last position, and the bias's, add up to 1
    neurons = flow.top_neurons(lm, f, 0, f.n_pos - 1, k=acts.shape[-1])
    out_f = torch.from_numpy(f.ffn_outputs[0, -1])
    bias = 0.0 if down.bias() is None else float(down.bias().float() @ out_f / out_f.pow(2).sum())
    assert abs(sum(n.share for n in neurons) + bias - 1) < 1e-4
    assert all(n.promotes for n in neurons[:2]) == (FAMILIES[kind] != "encoder")
    lens = flow.lens_tops(lm, f, [(f.n_layers, f.n_pos - 1)])
    assert bool(lens) == (FAMILIES[kind] == "decoder") == flow.has_lens(model)
    if lens:  # read through the final norm and the LM head, the last node is the model's prediction
        best = int(out.logits[0, -1].argmax())
        assert lens[(f.n_layers, f.n_pos - 1)][0][0] == flow.display_tokens(lm.tokenizer, [best])[0]


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_pieces_add_up_to_the_residual_update(tiny_loaded, kind):
    lm = tiny_loaded(kind)
    a = anatomy.of(lm.model)
    if a.placement in ("sandwich", "post-out"):
        lm = _with_random_norms(lm)
        a = anatomy.of(lm.model)
    model, stack = lm.model, flow.flow_stack(lm.model)
    subs = [s for s in flow.sublayer_names(model) if s != flow.FFN]
    seen, handles = {}, []

    shared = a.stacks[stack].shared_blocks  # ALBERT: one module for every layer, called once per layer

    def pre(key):
        def hook(module, args, kwargs):
            seen.setdefault(key, []).append(
                (args[0] if args else kwargs["hidden_states"])[0].detach().float().clone()
            )

        return hook

    def post(key):
        def hook(module, args, output):
            seen.setdefault(key, []).append(
                (output[0] if isinstance(output, tuple) else output)[0].detach().float().clone()
            )

        return hook

    for b in a.blocks(stack)[:1] if shared else a.blocks(stack):
        for sub in subs:
            att, update = (b.cross, b.cross_out) if sub == flow.CROSS else (b.attn, b.attn_out)
            handles.append(att.module.register_forward_pre_hook(pre(("x", sub, b.index)), with_kwargs=True))
            handles.append(att.o.register_forward_hook(post(("o", sub, b.index))))
            handles.append(update.register_forward_hook(post(("u", sub, b.index))))
    ids = hooked.encode(model, lm.tokenizer, TEXT)
    decoder_ids = None
    if FAMILIES[kind] == "encoder-decoder":
        decoder_ids = [hooked.decoder_start(model)] + lm.tokenizer(TARGET)["input_ids"][:-1]
    try:
        with torch.no_grad():
            out = model(**hooked.inputs(model, ids, decoder_ids), output_attentions=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for sub in subs:
        maps = (
            out.cross_attentions
            if sub == flow.CROSS
            else getattr(out, "decoder_attentions", None) or out.attentions
        )
        for b in a.blocks(stack):

            def got(what: str) -> torch.Tensor:
                return seen[(what, sub, 0)][b.index] if shared else seen[(what, sub, b.index)][0]

            att = b.cross if sub == flow.CROSS else b.attn
            x = out.encoder_last_hidden_state[0] if sub == flow.CROSS else got("x")
            w = maps[b.index][0].float()  # (head, tgt, src)
            vo, bias = flow.head_terms(att, x)  # (head, src, d_model)
            total = torch.einsum("hts,hsd->td", w, vo) + (0 if bias is None else bias)
            norm = b.attn_post_norm if sub == flow.ATTENTION else None
            if norm is not None:
                total = total * flow.post_scale(norm, got("o"))
            torch.testing.assert_close(total, got("u"), atol=1e-4, rtol=1e-4)


def _toy(parallel: bool) -> flow.Flow:
    """One layer, two positions: position 1's attention takes everything from position 0, and its FFN
    writes everything; no residual weight anywhere."""
    residual = np.zeros((1, 2, 2), np.float32)
    edges = np.zeros((1, 2, 2), np.float32)
    edges[0, 1, 0] = edges[0, 0, 0] = 1.0
    return flow.Flow(
        model_name="toy", stack="decoder", causal=True, ids=(1, 2), tokens=("a", "b"),
        sublayers=(flow.ATTENTION, flow.FFN), residual=residual, edges={flow.ATTENTION: edges},
        heads={flow.ATTENTION: edges[:, None]}, visible={flow.ATTENTION: edges > 0},
        weights={flow.ATTENTION: edges[:, None]}, ffn=np.ones((1, 2), np.float32),
        residuals=np.zeros((2, 2, 4), np.float32), ffn_inputs=np.zeros((1, 2, 4), np.float32),
        ffn_outputs=np.zeros((1, 2, 4), np.float32), parallel=parallel,
    )  # fmt: skip


def test_a_parallel_ffn_reads_the_block_input():
    sequential = flow.trace(_toy(False), 1, 0.5)
    assert sequential.nodes == {(2, 1), (1, 1), (0, 0)}  # the FFN reads attention's output
    parallel = flow.trace(_toy(True), 1, 0.5)
    assert parallel.nodes == {(2, 1), (0, 1)}  # the FFN reads the block's input; attention is not on it
    assert [e.kind for e in parallel.edges] == ["ffn"]
    fig = graph(_toy(True), flow.trace(_toy(True), 1, 0.0))
    ffn_hover = next(t for t in fig.data if t.name == "ffn").hovertext[0]
    assert "the FFN read the block's input" in ffn_hover


@pytest.mark.parametrize("kind", ["gptj", "gpt_neox", "falcon", "phi"])
def test_parallel_blocks_are_flagged(tiny_loaded, kind):
    f = flow.compute(tiny_loaded(kind), TEXT)
    assert f.parallel and f.sublayers == (flow.ATTENTION, flow.FFN)


def test_a_block_that_is_not_a_sum_is_refused(tiny_loaded):
    """BLOOM's apply_residual_connection_post_layernorm adds each update to the normalized stream: the
    block's output is not its input plus the updates, and the page says so instead of decomposing it."""
    lm = _with_random_norms(tiny_loaded("bloom"))
    for block in lm.model.transformer.h:
        block.apply_residual_connection_post_layernorm = True
    with pytest.raises(anatomy.UnsupportedModel, match="not the sums"):
        flow.compute(lm, TEXT)
