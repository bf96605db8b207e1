"""Head ablation, activation patching and expert routing on tiny models of every family."""

from __future__ import annotations

import pytest
import torch

from explorer.analyses import experiments, routing
from explorer.analyses.experiments import ExperimentError
from explorer.errors import InputError
from explorer.models import anatomy
from tests.conftest import MOE_KINDS, VOCAB, tiny_config, tiny_moe

KINDS = ["gpt2", "llama", "t5", "bart", "bert"]
# (kind, stack acted on); tiny BART's encoder barely moves its output (1e-5), so its decoder is used
STACKS = [("gpt2", None), ("llama", None), ("t5", "encoder"), ("t5", "decoder"), ("bart", "decoder"),
          ("bert", None)]  # fmt: skip
TEXTS = {"bert": "the cat sat on the [MASK]"}
CLEAN, CORRUPT = "the cat sat on the mat", "the dog ran to the park"


def text_of(kind: str) -> str:
    return TEXTS.get(kind, CLEAN)


def full_logits(loaded, probe) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**probe.inputs).logits.clone()


def ours(hooks: dict) -> list:
    """Hooks other than transformers' own: its first run with output_attentions or output_hidden_states
    installs `output_capturing_hook`s for good (inert unless that run's collector is active)."""
    return [h for h in hooks.values() if getattr(h, "__name__", "") != "output_capturing_hook"]


def no_hooks(model) -> bool:
    return all(not ours(m._forward_hooks) and not ours(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind,stack", STACKS)
def test_knocking_out_no_head_changes_nothing(tiny_loaded, kind, stack):
    loaded = tiny_loaded(kind)
    probe = experiments.prepare(loaded, text_of(kind), stack=stack)
    clean = experiments.clean_logits(loaded, probe)
    rows = experiments.ablated_logits(loaded, probe, [[], [(0, 1), (1, 2)], []])
    torch.testing.assert_close(rows[0], clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows[2], clean, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rows[1], clean, atol=1e-4)  # the hook does act on the other row
    assert experiments.ablate(loaded, probe, []).kl == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind,stack", STACKS)
def test_zero_ablating_a_whole_layer_equals_zero_attention_by_hand(tiny_loaded, kind, stack):
    loaded = tiny_loaded(kind)
    probe = experiments.prepare(loaded, text_of(kind), stack=stack)
    model, layer = loaded.model, 1
    heads = experiments.n_heads(model, probe.stack)
    ablated = experiments.ablated_logits(loaded, probe, [[(layer, h) for h in range(heads)]])[0]
    proj = anatomy.of(model).blocks(probe.stack)[layer].attn.o

    def only_bias(module, args, output):  # the projection of all-zero heads: its bias, or zeros
        bias = getattr(module, "bias", None)
        return torch.zeros_like(output) + (bias if bias is not None else 0)

    handle = proj.register_forward_hook(only_bias)
    try:
        by_hand = full_logits(loaded, probe)[0, probe.position]
    finally:
        handle.remove()
    torch.testing.assert_close(ablated, by_hand, atol=1e-6, rtol=1e-6)
    assert (ablated - experiments.clean_logits(loaded, probe)).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
def test_patching_every_position_of_the_first_residual_restores_the_clean_run(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    clean, corrupt = experiments.patch_probes(loaded, CLEAN, CORRUPT)
    cache = experiments.cache_activations(loaded, clean)
    everything = list(range(len(corrupt.ids)))
    patched = experiments.patched_logits(loaded, corrupt, cache, "resid", [(0, everything), (0, [])])
    torch.testing.assert_close(patched[0], experiments.clean_logits(loaded, clean), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched[1], experiments.clean_logits(loaded, corrupt), atol=1e-5, rtol=1e-5)
    result = experiments.patch(loaded, CLEAN, CORRUPT, " is", " was", kinds=("resid",))
    target, foil = result.target.token_id, result.foil.token_id
    ld = float(patched[0, target] - patched[0, foil])
    share = (ld - result.ld_corrupt) / (result.ld_clean - result.ld_corrupt)
    assert share == pytest.approx(1.0, abs=1e-4)
    same = [p for p, (a, b) in enumerate(zip(clean.ids, corrupt.ids)) if a == b]
    assert same  # positions whose tokens agree: the first layer's input there is the same in both runs
    for p in same:
        assert result.restored["resid"][0, p] == pytest.approx(0.0, abs=1e-4)


def test_patching_batched_cells_equal_one_at_a_time(tiny_loaded):
    loaded = tiny_loaded("llama")
    result = experiments.patch(loaded, CLEAN, CORRUPT, " is", " was", rows_per_batch=5)
    clean, corrupt = experiments.patch_probes(loaded, CLEAN, CORRUPT)
    cache = experiments.cache_activations(loaded, clean)
    t, f = result.target.token_id, result.foil.token_id
    for kind, layer, pos in [("resid", 1, 1), ("attn", 0, 2), ("mlp", 1, 5)]:
        one = experiments.patched_logits(loaded, corrupt, cache, kind, [(layer, [pos])])[0]
        share = (float(one[t] - one[f]) - result.ld_corrupt) / (result.ld_clean - result.ld_corrupt)
        assert result.restored[kind][layer, pos] == pytest.approx(share, abs=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_scan_equals_ablating_each_head_alone(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    probe = experiments.prepare(loaded, text_of(kind))
    target = experiments.target_token(loaded, probe, " is")
    seen = []
    scan = experiments.scan_heads(loaded, probe, target, "mean", lambda d, n: seen.append((d, n)),
                                  rows_per_batch=3)  # fmt: skip
    layers, heads = scan.delta_logprob.shape
    assert seen[-1] == (layers * heads, layers * heads) and len(seen) == -(-layers * heads // 3)
    for layer, head in [(0, 0), (layers - 1, heads - 1), (1, 2)]:
        alone = experiments.ablate(loaded, probe, [(layer, head)], "mean", target)
        assert scan.delta_logprob[layer, head] == pytest.approx(alone.delta_logprob, abs=1e-4)
        assert scan.kl[layer, head] == pytest.approx(alone.kl, abs=1e-4)


def test_encoder_decoder_reads_the_decoder_after_its_prefix(tiny_loaded):
    loaded = tiny_loaded("bart")
    probe = experiments.prepare(loaded, CLEAN, prefix="the dog", stack="decoder")
    assert probe.stack == probe.read_stack == "decoder"
    assert probe.read_tokens[1:] == ("the", "dog") and probe.position == 2
    target = experiments.target_token(loaded, probe, " ran")
    assert target.token_id == VOCAB["ran"]
    logits = experiments.clean_logits(loaded, probe)
    with torch.no_grad():
        out = loaded.model(**probe.inputs).logits[0, -1]
    torch.testing.assert_close(logits, out)


def test_the_model_is_left_exactly_as_loaded(tiny_loaded):
    loaded = tiny_loaded("llama")
    probe = experiments.prepare(loaded, CLEAN)
    before = full_logits(loaded, probe)
    target = experiments.target_token(loaded, probe, " is")
    experiments.ablate(loaded, probe, [(0, 1), (1, 3)], "mean", target)
    experiments.scan_heads(loaded, probe, target, "zero", rows_per_batch=4)
    experiments.patch(loaded, CLEAN, CORRUPT, " is", " was")
    wrong = {layer: torch.zeros(3, 3) for layer in range(2)}  # a mean of the wrong shape: the hook raises
    with pytest.raises(RuntimeError):
        experiments.ablated_logits(loaded, probe, [[(0, 0)]], "mean", wrong)
    clean, corrupt = experiments.patch_probes(loaded, CLEAN, CORRUPT)
    cache = experiments.cache_activations(loaded, clean)
    cache["attn"][1] = torch.zeros(len(clean.ids), 5)  # a cached activation of the wrong width
    with pytest.raises(RuntimeError):
        experiments.patched_logits(loaded, corrupt, cache, "attn", [(0, [1]), (1, [2])])
    assert no_hooks(loaded.model)
    assert torch.equal(full_logits(loaded, probe), before)
    assert not loaded.lock._is_owned()


def test_bad_input_gets_clear_messages(tiny_loaded):
    loaded = tiny_loaded("gpt2")
    with pytest.raises(InputError, match="empty"):
        experiments.prepare(loaded, "   ")
    with pytest.raises(InputError, match="at most"):
        experiments.prepare(loaded, "the cat " * 40)
    probe = experiments.prepare(loaded, CLEAN)
    with pytest.raises(ExperimentError, match="target is empty"):
        experiments.target_token(loaded, probe, "")
    with pytest.raises(ExperimentError, match="not in this model's vocabulary"):
        experiments.target_token(loaded, probe, " Paris")
    two = experiments.target_token(loaded, probe, " is tired")
    assert two.token_id == VOCAB["is"] and "2 tokens" in two.note and "first token" in two.note
    with pytest.raises(ExperimentError, match=r"clean prompt is 6 tokens.*corrupted one 3"):
        experiments.patch(loaded, CLEAN, "the dog ran", " is", " was")
    with pytest.raises(ExperimentError, match="same token"):
        experiments.patch(loaded, CLEAN, CORRUPT, " is", " is")
    with pytest.raises(ExperimentError, match="no head 9"):
        experiments.ablate(loaded, probe, [(0, 9)])
    with pytest.raises(ExperimentError, match="LAYER.HEAD"):
        experiments.parse_heads("3.1,five")
    assert experiments.parse_heads(" 3.1, 5.0 ,") == [(3, 1), (5, 0)]


def test_masked_lm_reads_the_mask_and_an_encoder_without_head_is_refused(tiny_loaded):
    loaded = tiny_loaded("bert")
    probe = experiments.prepare(loaded, "the cat sat on the [MASK]")
    assert probe.read_tokens[probe.position] == "[MASK]"
    with pytest.raises(ExperimentError, match=r"put the mask token \[MASK\]"):
        experiments.prepare(loaded, CLEAN)
    import transformers as tf

    bare = tf.BertModel(tiny_config("bert"))
    with pytest.raises(ExperimentError, match="no language-model head"):
        experiments.check_model(bare)


@pytest.mark.parametrize("kind", MOE_KINDS)
def test_routing_weights_are_the_routers_softmax(kind):
    loaded = tiny_moe(kind)
    found = routing.routers(loaded.model)
    assert [layer for layer, _ in found] == [0, 1]
    inputs: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, a, i=i: inputs.__setitem__(i, a[0].detach()))
               for i, (_, m) in enumerate(found)]  # fmt: skip
    x = torch.tensor([[VOCAB[w] for w in "the cat sat".split()]])
    with torch.no_grad():
        before = loaded.model(input_ids=x).logits
    try:
        r = routing.route(loaded, "the cat sat on the mat")
    finally:
        for h in handles:
            h.remove()
    assert no_hooks(loaded.model)
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=x).logits, before)
    for i, (_, router) in enumerate(found):
        x = inputs[i].reshape(-1, 32)  # (pos, d_model): what the router read
        probs = torch.softmax(x @ router.weight.T, -1)  # (pos, expert)
        torch.testing.assert_close(torch.from_numpy(r.probs[i]), probs, atol=1e-6, rtol=1e-5)
        top, idx = probs.topk(2, -1)
        if getattr(loaded.model.config, "norm_topk_prob", True):  # Mixtral always renormalizes the top k
            top = top / top.sum(-1, keepdim=True)
        expected = torch.zeros_like(probs).scatter(-1, idx, top)
        torch.testing.assert_close(torch.from_numpy(r.weights[i]), expected, atol=1e-6, rtol=1e-5)
    assert r.top_k == 2 and r.usage().sum(1).tolist() == [2 * len(r.tokens)] * 2


def test_a_model_without_experts_says_so(tiny_loaded):
    loaded = tiny_loaded("llama")
    assert not routing.has_experts(loaded.model)
    with pytest.raises(routing.NoExperts, match="has no experts"):
        routing.route(loaded, CLEAN)


def test_ablate_and_patch_commands(tiny_dir, tiny_loaded):
    import json

    from tests.unit.test_capture import _cli

    folder = str(tiny_dir("gpt2"))
    done = _cli("ablate", folder, "--text", CLEAN, "--target", " is", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    loaded = tiny_loaded("gpt2")
    probe = experiments.prepare(loaded, CLEAN)
    scan = experiments.scan_heads(loaded, probe, experiments.target_token(loaded, probe, " is"))
    assert [(r["layer"], r["head"]) for r in rows] == [(a, b) for a in range(2) for b in range(4)]
    for r in rows:
        assert r["delta_logprob"] == pytest.approx(float(scan.delta_logprob[r["layer"], r["head"]]), abs=1e-4)

    done = _cli("ablate", folder, "--text", CLEAN, "--target", " is", "--heads", "1.2,0.0", "--json")
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["heads"] == [{"layer": 1, "head": 2}, {"layer": 0, "head": 0}]
    assert row["delta_logprob"] == pytest.approx(row["logprob_after"] - row["logprob_before"], abs=1e-5)

    done = _cli("patch", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--target", " is", "--foil", " was",
                "--kinds", "resid", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 2 * 6 and {r["kind"] for r in rows} == {"resid"}
    assert [r["token"] for r in rows[:6]] == CORRUPT.split()
    result = experiments.patch(loaded, CLEAN, CORRUPT, " is", " was", kinds=("resid",))
    for r in rows:
        assert r["restored"] == pytest.approx(
            float(result.restored["resid"][r["layer"], r["position"]]), abs=1e-4
        )

    done = _cli(
        "patch", folder, "--clean", CLEAN, "--corrupt", "the dog", "--target", " is", "--foil", " was"
    )
    assert done.returncode == 1 and done.stderr.startswith("error: The clean prompt is 6 tokens")
    assert len(done.stderr.strip().splitlines()) == 1


def test_comparison_matches_tokens_by_text(tiny_loaded):
    import numpy as np

    from explorer.analyses import compare

    a, b = tiny_loaded("gpt2"), tiny_loaded("llama")
    la, lb = np.zeros(len(VOCAB)), np.zeros(len(VOCAB))
    la[VOCAB["cat"]], la[VOCAB["dog"]] = 5.0, 4.0
    lb[VOCAB["dog"]], lb[VOCAB["park"]] = 6.0, 3.0
    rows = {r.text: r for r in compare.next_tokens(a, la, b, lb, k=2)}
    assert list(rows) == ["cat", "dog", "park"]
    pa, pb = np.exp(la) / np.exp(la).sum(), np.exp(lb) / np.exp(lb).sum()
    for word, r in rows.items():
        assert r.prob_a == pytest.approx(pa[VOCAB[word]]) and r.prob_b == pytest.approx(pb[VOCAB[word]])
    assert compare._prob_of(b.tokenizer, pb, "cat dog") is None  # two tokens of that model: no bar


def test_figures_escape_tokens_and_centre_deltas_at_zero():
    import numpy as np

    from explorer.figures import experiments as figs

    hostile = ["<img src=x onerror=alert(1)>", "a&b"]
    fig = figs.patching_figure(np.array([[0.5, -2.0]]), hostile, "Restored <b>")
    assert fig.layout.xaxis.ticktext == ("&lt;img src=x onerror=alert(1)&gt;", "a&amp;b")
    assert fig.data[0].zmin == -2.0 and fig.data[0].zmax == 2.0 and "&lt;b&gt;" in fig.layout.title.text
    scan = figs.head_scan_figure(np.array([[0.1, -0.4], [0.0, 0.2]]), "scan")
    assert scan.data[0].zmid == 0 and scan.data[0].zmin == -0.4 and scan.data[0].zmax == 0.4
    bars = figs.paired_bars(hostile, [0.5, None], [0.1, 0.2], ("<m1>", "m2"), "t")
    assert all("<img" not in y for y in bars.data[0].y) and bars.data[0].name == "&lt;m1&gt;"
    assert np.isnan(bars.data[0].x[1])
