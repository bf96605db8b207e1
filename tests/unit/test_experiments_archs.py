"""Head ablation, the head scan and activation patching on a tiny model of every architecture, checked
against forwards with hooks written by hand (plain `register_forward_pre_hook`, not explorer.runs.hooked)."""

from __future__ import annotations

import inspect
import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from explorer.analyses import experiments
from explorer.models import anatomy
from tests.conftest import ARCHITECTURES, FAMILIES, no_hooks, tiny_config, tiny_tokenizer

# (kind, stack acted on): both stacks of every encoder-decoder
CASES = [
    (kind, stack)
    for kind in ARCHITECTURES
    for stack in (("encoder", "decoder") if FAMILIES[kind] == "encoder-decoder" else (None,))
]
IDS = [f"{kind}-{stack}" if stack else kind for kind, stack in CASES]
CLEAN, CORRUPT = "the cat sat on the mat", "the dog ran to the park"
MASKED = "the cat sat on the [MASK]", "the dog ran to the [MASK]"
PREFIX = "the dog"  # encoder-decoders: the decoder reads its start token and these, then predicts


def texts(kind: str) -> tuple[str, str]:
    return MASKED if FAMILIES[kind] == "encoder" else (CLEAN, CORRUPT)


def tiny(tiny_loaded, kind: str):
    """The tiny checkpoint with the tokenizer it was saved with (loading a folder of model type qwen2
    gives a Qwen2Tokenizer over the saved vocabulary, which splits no word)."""
    return replace(tiny_loaded(kind), tokenizer=tiny_tokenizer())


def probes(loaded, kind: str, stack: str | None) -> tuple[experiments.Probe, experiments.Probe]:
    return experiments.patch_probes(loaded, *texts(kind), PREFIX, stack)


def by_hand(loaded, probe, hooks=(), rows: int = 1) -> torch.Tensor:
    """The read position's logits (rows, vocab) of a plain forward with `hooks` [(module, pre-hook)]
    registered here and removed after; with the experiments' options (no cache, and only the last
    position's logits where that is the one read: the LM head on one row differs in the last bits)."""
    model = loaded.model
    names = inspect.signature(model.forward).parameters
    options = {"use_cache": False} if "use_cache" in names else {}
    position = probe.position
    if "logits_to_keep" in names and position == len(probe.read_tokens) - 1:
        options["logits_to_keep"], position = 1, -1
    inputs = {k: v.expand(rows, *v.shape[1:]) for k, v in probe.inputs.items()}
    handles = [module.register_forward_pre_hook(fn) for module, fn in hooks]
    try:
        with torch.no_grad():
            return model(**inputs, **options).logits[:, position].float()
    finally:
        for handle in handles:
            handle.remove()


def zero_heads(block: anatomy.Block, heads: list[int], shared: bool):
    """(module, pre-hook) zeroing `heads` of the block's output projection input (pos, head * d_head);
    for a block shared by every layer, only on this layer's call."""
    calls = [0]
    d = block.attn.d_head

    def hook(module, args):
        n, calls[0] = calls[0], calls[0] + 1
        if shared and n != block.index:
            return None
        x = args[0].clone()
        for h in heads:
            x[..., h * d : (h + 1) * d] = 0
        return (x,) + tuple(args[1:])

    return block.attn.o, hook


def shape(loaded, probe) -> tuple[list[anatomy.Block], bool]:
    found = anatomy.of(loaded.model)
    return list(found.blocks(probe.stack)), found.stacks[probe.stack].shared_blocks


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_knocking_out_no_head_changes_no_bit(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, _ = probes(loaded, kind, stack)
    assert torch.equal(experiments.clean_logits(loaded, probe), by_hand(loaded, probe)[0])
    for mode in ("zero", "mean"):
        # row 1 knocks out nothing while the hook acts on row 0 in the same pass
        rows = experiments.ablated_logits(loaded, probe, [[(0, 1)], []], mode)
        assert torch.equal(rows[1], by_hand(loaded, probe, rows=2)[1])
        assert not torch.equal(rows[0], rows[1])
    assert experiments.ablate(loaded, probe, []).kl == 0.0


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_zero_ablating_a_layer_equals_zeroing_its_output_projection_input(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, _ = probes(loaded, kind, stack)
    clean = experiments.clean_logits(loaded, probe)
    blocks, shared = shape(loaded, probe)
    for block in blocks:
        every = list(range(block.attn.n_heads))
        ours = experiments.ablated_logits(loaded, probe, [[(block.index, h) for h in every]])[0]
        assert torch.equal(ours, by_hand(loaded, probe, [zero_heads(block, every, shared)])[0])
        assert not torch.equal(ours, clean)


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_one_head_ablated_by_hand_equals_ablate(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, _ = probes(loaded, kind, stack)
    blocks, shared = shape(loaded, probe)
    for block, head in [(blocks[0], 1), (blocks[-1], blocks[-1].attn.n_heads - 1)]:
        expected = by_hand(loaded, probe, [zero_heads(block, [head], shared)])[0]
        assert torch.equal(experiments.ablated_logits(loaded, probe, [[(block.index, head)]])[0], expected)
        if block.index == 0:  # the public call too: its distribution after is the hand-made one
            result = experiments.ablate(loaded, probe, [(0, head)])
            torch.testing.assert_close(torch.from_numpy(result.after), torch.log_softmax(expected, -1))


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_patching_a_prompt_into_itself_changes_no_bit(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, _ = probes(loaded, kind, stack)
    clean = experiments.clean_logits(loaded, probe)
    cache = experiments.cache_activations(loaded, probe)
    everything = list(range(len(probe.ids)))
    for kind_ in experiments.KINDS:
        for layer in range(experiments.n_layers(loaded.model, probe.stack)):
            patched = experiments.patched_logits(loaded, probe, cache, kind_, [(layer, everything)])
            assert torch.equal(patched[0], clean), (kind_, layer)


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_patching_the_first_residual_everywhere_restores_the_clean_run(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    clean, corrupt = probes(loaded, kind, stack)
    cache = experiments.cache_activations(loaded, clean, ("resid",))
    everything = list(range(len(clean.ids)))
    patched = experiments.patched_logits(loaded, corrupt, cache, "resid", [(0, everything)])[0]
    a, b = experiments.clean_logits(loaded, clean), experiments.clean_logits(loaded, corrupt)
    t = experiments.target_token(loaded, clean, " is").token_id
    f = experiments.target_token(loaded, clean, " was").token_id
    ld_clean, ld_corrupt, ld = (float(x[t] - x[f]) for x in (a, b, patched))
    assert abs(ld_clean - ld_corrupt) > 1e-6
    share = (ld - ld_corrupt) / (ld_clean - ld_corrupt)
    if stack == "decoder":  # the prompts are sources: the decoder's input is the same in both runs,
        assert clean.ids == corrupt.ids  # so patching it restores nothing
        assert share == pytest.approx(0.0, abs=1e-4)
    else:
        assert share == pytest.approx(1.0, abs=1e-4)
        torch.testing.assert_close(patched, a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_the_model_is_left_bit_identical_after_every_experiment(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, corrupt = probes(loaded, kind, stack)
    before = by_hand(loaded, probe)
    target = experiments.target_token(loaded, probe, " is")
    experiments.ablate(loaded, probe, [(0, 1), (1, 3)], "mean", target)
    experiments.scan_heads(loaded, probe, target, "zero", rows_per_batch=5)
    experiments.patch(loaded, *texts(kind), " is", " was", prefix=PREFIX, stack=stack, rows_per_batch=16)
    wrong = {i: torch.zeros(3, 3) for i in range(experiments.n_layers(loaded.model, probe.stack))}
    with pytest.raises(RuntimeError):  # a mean of the wrong shape: the hook raises mid-run
        experiments.ablated_logits(loaded, probe, [[(0, 0)]], "mean", wrong)
    cache = experiments.cache_activations(loaded, probe)
    cache["mlp"][0] = torch.zeros(len(probe.ids), 5)  # a cached activation of the wrong width
    with pytest.raises(RuntimeError):
        experiments.patched_logits(loaded, corrupt, cache, "mlp", [(1, [0]), (0, [0])])
    assert no_hooks(loaded.model)
    assert torch.equal(by_hand(loaded, probe), before)
    assert not loaded.lock._is_owned()


@pytest.mark.parametrize("kind,stack", CASES, ids=IDS)
def test_scan_equals_ablating_each_head_alone(tiny_loaded, kind, stack):
    loaded = tiny(tiny_loaded, kind)
    probe, _ = probes(loaded, kind, stack)
    target = experiments.target_token(loaded, probe, " is")
    scan = experiments.scan_heads(loaded, probe, target, "mean", rows_per_batch=3)
    layers, heads = scan.delta_logprob.shape
    assert (layers, heads) == (experiments.n_layers(loaded.model, probe.stack), 4)
    for layer, head in [(0, 0), (layers - 1, heads - 1), (1, 2)]:
        alone = experiments.ablate(loaded, probe, [(layer, head)], "mean", target)
        assert scan.delta_logprob[layer, head] == pytest.approx(alone.delta_logprob, abs=1e-5)
        assert scan.kl[layer, head] == pytest.approx(alone.kl, abs=1e-5)


def test_a_part_the_model_does_not_call_is_refused_not_skipped():
    """Bloom's slow_but_exact path multiplies by its output projection's weight without calling it: a hook
    there never runs, which must be an error, not the unhooked numbers."""
    import transformers as tf

    config = tiny_config("bloom")
    config.pretraining_tp, config.slow_but_exact = 2, True
    torch.manual_seed(0)
    model = tf.BloomForCausalLM(config).eval()
    loaded = SimpleNamespace(model=model, tokenizer=tiny_tokenizer(), lock=threading.RLock())
    probe = experiments.prepare(loaded, CLEAN)
    with pytest.raises(experiments.ExperimentError, match="never called its Linear"):
        experiments.ablated_logits(loaded, probe, [[(0, 1)]])
    assert no_hooks(model)
