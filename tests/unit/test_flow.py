"""Information flow: importances are a distribution at every (layer, position, sub-layer); the per-head,
per-source attention pieces add up to what the model's output projection computed; a layer whose attention
writes nothing leaves all the weight on the residual; routes, CLI rows and bad input."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import transformers as tf

from explorer.analyses import flow
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.loading import LoadRequest, load_model
from explorer.runs import hooked
from tests.unit.test_capture import _cli
from tests.unit.test_scratch import TEXT, gemma_config, qwen_config

KINDS = ["bert", "gpt2", "llama", "t5", "bart", "gemma3", "qwen2"]
SHORT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def loaded(tiny_loaded, tmp_path_factory):
    """Tiny models of every family (Gemma 3 with non-trivial norms, so that its post-norms matter)."""
    cache = {}

    def get(kind):
        if kind in ("gemma3", "qwen2") and kind not in cache:
            from tests.conftest import tiny_tokenizer

            torch.manual_seed(0)
            if kind == "gemma3":
                model = tf.Gemma3ForCausalLM(gemma_config())
                for name, p in model.named_parameters():
                    if "norm" in name:
                        p.data.normal_(0, 0.5)
            else:
                model = tf.Qwen2ForCausalLM(qwen_config())
            folder = tmp_path_factory.mktemp(f"tiny-{kind}-flow")
            model.save_pretrained(folder)
            tiny_tokenizer().save_pretrained(folder)
            cache[kind] = load_model(LoadRequest("folder", str(folder)))
        return cache[kind] if kind in cache else tiny_loaded(kind)

    return get


def _term_sums(f: flow.Flow) -> list[np.ndarray]:
    """Per sub-layer: (layer, pos) sums of the importances of the terms without a head."""
    sums = []
    for k, sub in enumerate(f.sublayers):
        total = f.residual[:, k].astype(np.float64)
        total = total + (f.ffn if sub == flow.FFN else f.edges[sub].sum(-1))
        sums.append(total)
    return sums


@pytest.mark.parametrize("kind", KINDS)
def test_importances_are_a_distribution(loaded, kind):
    lm = loaded(kind)
    f = flow.compute(lm, TEXT, target="the cat sat" if kind in ("t5", "bart") else None)
    assert f.residual.min() >= 0 and f.ffn.min() >= 0
    for sub in f.edges:
        assert f.edges[sub].min() >= 0 and f.heads[sub].min() >= 0
        # heads of an edge add up to the edge
        np.testing.assert_allclose(f.heads[sub].sum(1), f.edges[sub], atol=1e-5)
        # a source a position cannot see (causal, the future) carries nothing
        assert np.all(f.edges[sub][~f.visible[sub]] == 0)
    for total in _term_sums(f):
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
    if f.causal:
        upper = np.triu(np.ones((f.n_pos, f.n_pos), bool), 1)
        assert not f.visible[flow.ATTENTION][:, upper].any()
    assert f.sublayers == (("attention", "cross", "ffn") if kind in ("t5", "bart") else ("attention", "ffn"))


def _run_with_hooks(lm, text, target=None):
    """The reference: what each attention read (its input; for cross-attention, the encoder's output) and
    what its output projection returned, the weights."""
    model = lm.model
    a = anatomy.of(model)
    subs = [s for s in flow.sublayer_names(model) if s != flow.FFN]
    seen, handles = {}, []
    n = a.n_layers(flow.flow_stack(model))
    for i in range(n):
        for sub in subs:
            att = a.attention("cross" if sub == "cross" else flow.flow_stack(model), i)

            def read(m, args, kwargs, key=("v", sub, i)):
                seen[key] = (args[0] if args else kwargs["hidden_states"])[0].detach().float()

            def hook(m, args, o, key=("o", sub, i)):
                seen[key] = (o[0] if isinstance(o, tuple) else o)[0].detach().float()

            handles.append(att.module.register_forward_pre_hook(read, with_kwargs=True))
            handles.append(att.o.register_forward_hook(hook))
    kwargs, _, _, _ = flow._inputs(lm, text, target, flow.MAX_TOKENS)
    try:
        with torch.no_grad():
            out = model(**kwargs, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    maps = (
        {"attention": out.decoder_attentions, "cross": out.cross_attentions}
        if len(subs) == 2
        else {"attention": out.attentions}
    )
    for i in range(n):
        if "cross" in subs:
            seen[("v", "cross", i)] = out.encoder_last_hidden_state[0].float()
    return a, subs, seen, maps, n


@pytest.mark.parametrize("kind", KINDS)
def test_head_and_source_pieces_add_up_to_the_output(loaded, kind):
    lm = loaded(kind)
    kind_, subs, seen, maps, n = _run_with_hooks(lm, TEXT, "the cat" if kind in ("t5", "bart") else None)
    for i in range(n):
        for sub in subs:
            a = maps[sub][i][0].float()  # (head, tgt, src)
            att = kind_.attention("cross" if sub == "cross" else flow.flow_stack(lm.model), i)
            vo, bias = flow.head_terms(att, seen[("v", sub, i)])
            pieces = a.unsqueeze(-1) * vo.unsqueeze(1)  # (head, tgt, src, d_model)
            total = pieces.sum((0, 2)) + (bias if bias is not None else 0)
            torch.testing.assert_close(total, seen[("o", sub, i)], atol=1e-5, rtol=1e-4)
            # one head's pieces add up to that head's own output through W_O: A V W_O[h]
            assert pieces.shape[0] == a.shape[0]


def test_silenced_attention_puts_all_weight_on_the_residual(loaded):
    lm = loaded("llama")
    silent = copy.deepcopy(lm.model)
    silent.model.layers[1].self_attn.o_proj.weight.data.zero_()
    f = flow.compute(replace(lm, model=silent), TEXT)
    np.testing.assert_allclose(f.residual[1, 0], 1.0, atol=1e-6)
    assert f.edges["attention"][1].max() == 0
    # the other layer still moves information between positions
    assert f.edges["attention"][0].max() > 0


def test_silenced_ffn_and_bias_models(loaded):
    lm = loaded("gpt2")
    silent = copy.deepcopy(lm.model)
    silent.transformer.h[0].mlp.c_proj.weight.data.zero_()
    silent.transformer.h[0].mlp.c_proj.bias.data.zero_()
    f = flow.compute(replace(lm, model=silent), TEXT)
    k = f.sublayers.index("ffn")
    np.testing.assert_allclose(f.residual[0, k], 1.0, atol=1e-6)
    assert f.ffn[0].max() == 0


def test_residual_stream_adds_up(loaded):
    """Pre-norm: the stream entering layer l+1 is the stream entering l plus both updates (GPT-2)."""
    lm = loaded("gpt2")
    f = flow.compute(lm, TEXT)
    ids = hooked.encode(lm.model, lm.tokenizer, TEXT)
    with torch.no_grad():
        out = lm.model(torch.tensor([ids]), output_hidden_states=True)
    np.testing.assert_allclose(f.residuals[:-1], torch.stack(out.hidden_states[:-1])[:, 0].numpy(), atol=1e-5)


def test_trace_keeps_reachable_edges(loaded):
    f = flow.compute(loaded("llama"), TEXT)
    top = f.n_pos - 1
    full = flow.trace(f, top, 0.0)
    some = flow.trace(f, top, 0.05)
    assert set(e.key for e in some.edges) <= set(e.key for e in full.edges)
    assert all(e.importance >= 0.05 for e in some.edges)
    # every kept edge ends at a reached node, and the top node is the chosen position
    n_sub = len(f.sublayers)
    for e in some.edges:
        lvl = flow.level_of(f, e.layer, f.sublayers.index(e.sublayer))
        assert (lvl + 1, e.tgt) in some.nodes
    assert (f.n_layers * n_sub, top) in some.nodes
    # a causal decoder's routes to position 2 never touch later positions
    early = flow.trace(f, 2, 0.0)
    assert max(p for _, p in early.nodes) == 2
    with pytest.raises(InputError, match="out of range"):
        flow.trace(f, f.n_pos, 0.1)


def test_encoder_routes_reach_later_positions(loaded):
    f = flow.compute(loaded("bert"), TEXT)
    routes = flow.trace(f, 0, 0.0)
    assert not f.causal and max(p for _, p in routes.nodes) == f.n_pos - 1


def test_cross_edges_point_into_the_encoder(loaded):
    f = flow.compute(loaded("bart"), SHORT, target="the cat sat")
    assert f.source_tokens is not None and f.edges["cross"].shape[-1] == len(f.source_ids)
    routes = flow.trace(f, f.n_pos - 1, 0.0)
    cross = [e for e in routes.edges if e.kind == "cross"]
    assert cross and routes.sources == {e.src for e in cross}
    assert routes.sources <= set(range(len(f.source_ids)))
    # at threshold 0 every encoder position with some weight on a reached decoder node is kept
    after_cross = [(lvl // 3, t) for lvl, t in routes.nodes if lvl % 3 == 2]  # level 3 layer + 2
    weighted = {int(s) for layer, t in after_cross for s in np.flatnonzero(f.edges["cross"][layer, t])}
    assert routes.sources == weighted


def test_generated_target(loaded):
    f = flow.compute(loaded("t5"), SHORT)
    assert f.target_generated and f.n_pos >= 2


def test_rows_for_the_command_line(loaded):
    f = flow.compute(loaded("gpt2"), SHORT)
    rows = f.rows()
    assert len(rows) == f.n_layers * f.n_pos
    for row in rows:
        json.dumps(row)
        for sub in f.sublayers:
            plain = [t["importance"] for t in row["terms"] if t["sublayer"] == sub and "head" not in t]
            assert abs(sum(plain) - 1) < 1e-5
        sources = {t["source"] for t in row["terms"] if t["kind"] == "attention"}
        assert sources == set(range(row["position"] + 1))


def test_bad_input(loaded):
    lm = loaded("gpt2")
    with pytest.raises(InputError, match="empty"):
        flow.compute(lm, "   ")
    with pytest.raises(InputError, match="at most"):
        flow.compute(lm, "the " * 200)
    with pytest.raises(InputError, match="encoder-decoders"):
        flow.compute(lm, SHORT, target="the")


def test_unsupported_family(loaded):
    lm = loaded("gpt2")
    other = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=50, d_model=32, n_layer=1, n_head=4, d_inner=64))
    with pytest.raises(anatomy.UnsupportedModel, match="model type 'xlnet'"):
        flow.compute(replace(lm, model=other), SHORT)


def test_neurons_and_lens(loaded):
    lm = loaded("llama")
    f = flow.compute(lm, SHORT)
    neurons = flow.top_neurons(lm, f, 1, 2, k=48)
    # all neurons' shares (no bias in Llama's MLP) add up to 1
    assert abs(sum(n.share for n in neurons) - 1) < 1e-4
    assert neurons[0].share >= neurons[-1].share and neurons[0].promotes
    lens = flow.lens_tops(lm, f, [(0, 0), (f.n_layers, f.n_pos - 1)])
    assert len(lens[(0, 0)]) == 3 and all(0 <= p <= 1 for _, p in lens[(0, 0)])
    # the last boundary read through the lens is the model's own prediction
    ids = hooked.encode(lm.model, lm.tokenizer, SHORT)
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, -1]
    best = lm.tokenizer.convert_ids_to_tokens(int(logits.argmax()))
    assert lens[(f.n_layers, f.n_pos - 1)][0][0] == best
    assert flow.lens_tops(loaded("bert"), flow.compute(loaded("bert"), SHORT), [(0, 0)]) == {}


def test_flow_command(tiny_dir):
    done = _cli("flow", str(tiny_dir("llama")), "--text", SHORT, "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    from tests.conftest import tiny_tokenizer

    n_pos = len(tiny_tokenizer()(SHORT)["input_ids"])
    assert {(r["layer"], r["position"]) for r in rows} == {(i, t) for i in range(2) for t in range(n_pos)}
    for row in rows:
        for sub in ("attention", "ffn"):
            plain = [t for t in row["terms"] if t["sublayer"] == sub and "head" not in t]
            assert abs(sum(t["importance"] for t in plain) - 1) < 1e-5
            assert all(t["importance"] >= 0 and t["kind"] in ("residual", "attention", "ffn") for t in plain)
        heads = [t for t in row["terms"] if "head" in t]
        assert {t["head"] for t in heads} == {0, 1, 2, 3} and all("source" in t for t in heads)


def test_flow_command_on_routes_and_errors(tiny_dir):
    done = _cli(
        "flow", str(tiny_dir("t5")), "--text", SHORT, "--target", "the cat", "--position", "1", "--json"
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows and all(r["position"] <= 1 for r in rows)
    cross = [t for r in rows for t in r["terms"] if t["sublayer"] == "cross"]
    assert cross and all(t["stack"] == "encoder" for t in cross if t["kind"] == "attention")
    for args, message in (
        (("--text", "  "), "empty"),
        (("--text", SHORT, "--position", "40"), "out of range"),
    ):
        done = _cli("flow", str(tiny_dir("gpt2")), *args, "--json")
        assert done.returncode == 1 and message in done.stderr and not done.stdout
        assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"])
def test_embedded_checkpoints(name):
    """The real models: distributions everywhere, the stream between blocks equal to the model's hidden
    states, and (decoders) the last node read through the logit lens is the model's own prediction."""
    lm = load_model(LoadRequest("embedded", name))
    text = "The Eiffel Tower is in the city of"
    f = flow.compute(lm, text)
    for total in _term_sums(f):
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
    ids = hooked.encode(lm.model, lm.tokenizer, text)
    with torch.no_grad():
        out = lm.model(torch.tensor([ids]), output_hidden_states=True)
    np.testing.assert_allclose(
        f.residuals[1:-1], torch.stack(out.hidden_states[1:-1])[:, 0].numpy(), atol=1e-3
    )
    routes = flow.trace(f, f.n_pos - 1, 0.04)
    assert any(e.kind == "attention" and e.src != e.tgt for e in routes.edges)
    if f.causal:
        lens = flow.lens_tops(lm, f, [(f.n_layers, f.n_pos - 1)])
        best = lm.tokenizer.convert_ids_to_tokens(int(out.logits[0, -1].argmax()))
        top = lens[(f.n_layers, f.n_pos - 1)][0][0]
        assert top == flow.display_tokens(lm.tokenizer, [lm.tokenizer.convert_tokens_to_ids(best)])[0]
