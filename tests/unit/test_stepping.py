"""The stepper on tiny decoders and encoder-decoders: it reproduces generate(), shapes distributions as
transformers' processors do, undoes exactly, and its cached path agrees with a full re-run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.errors import InputError
from explorer.models.loading import LoadRequest, load_model
from explorer.runs.stepping import Settings, Stepper, eos_ids
from tests.conftest import VOCAB

PROMPT = "the cat sat on"
SOURCE = "the cat sat on the mat because it was tired"
KINDS = ["gpt2", "llama", "t5", "bart", "gemma3"]


def tiny_gemma3(folder):
    """A 2-layer Gemma 3 text model with a sliding window of 4 on its first layer."""
    import transformers as tf

    from tests.conftest import tiny_tokenizer

    config = tf.Gemma3TextConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=5,
        eos_token_id=6,
    )
    torch.manual_seed(0)
    model = tf.Gemma3ForCausalLM(config)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tiny_loaded, tmp_path_factory):
    found = {k: tiny_loaded(k) for k in KINDS[:4]}
    found["gemma3"] = load_model(LoadRequest("folder", str(tiny_gemma3(tmp_path_factory.mktemp("gemma3")))))
    return found


def start(loaded, prompt=PROMPT):
    if loaded.card.family == "encoder-decoder":
        return Stepper.start(loaded, "", source=SOURCE)
    return Stepper.start(loaded, prompt)


def reference(loaded, stepper, n, **kwargs):
    """What model.generate returns for the same input: (new token ids, output with scores and logits)."""
    model = loaded.model
    if stepper.source_ids is not None:
        # tiny T5's decoder is deeper than its encoder, which generate's cache does not handle
        kwargs.setdefault("use_cache", model.config.model_type != "t5")
        out = model.generate(
            input_ids=torch.tensor([stepper.source_ids]),
            max_new_tokens=n,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            **kwargs,
        )
        return out.sequences[0, 1:].tolist(), out
    ids = torch.tensor([stepper.prompt_ids])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        **kwargs,
    )
    return out.sequences[0, ids.shape[1] :].tolist(), out


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_steps_reproduce_generate(models, kind):
    loaded = models[kind]
    stepper = start(loaded)
    n = 12
    expected, _ = reference(loaded, stepper, n, do_sample=False)
    for want in expected:
        if stepper.finished:
            break
        assert stepper.step(Settings()).token_id == want
    assert [s.token_id for s in stepper.steps] == expected[: len(stepper.steps)]
    assert all(s.how == "greedy" and s.rank == 1 for s in stepper.steps)


@pytest.mark.parametrize("kind", ["llama", "bart"])
def test_seeded_sampling_is_reproducible(models, kind):
    settings = Settings(temperature=1.5, seed=7)

    def run(s):
        stepper = start(models[kind])
        for _ in range(8):
            if not stepper.finished:
                stepper.step(s)
        return [x.token_id for x in stepper.steps]

    first = run(settings)
    assert run(settings) == first
    assert any(run(Settings(temperature=1.5, seed=s)) != first for s in (8, 9, 10))


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bart"])
def test_processed_distribution_equals_transformers_processors(models, kind):
    loaded = models[kind]
    knobs = dict(temperature=0.7, top_k=6, top_p=0.9, repetition_penalty=1.3)
    torch.manual_seed(0)
    stepper = start(loaded)
    tokens, out = reference(loaded, stepper, 6, do_sample=True, **knobs)
    settings = Settings(**knobs)
    # generate() stops at its max_length, where BART's config forces the end-of-sequence token; the
    # stepper has no such limit short of the context: compare every step but that last one
    for i, token in enumerate(tokens[:-1]):
        raw, shaped = stepper.distribution(settings)
        np.testing.assert_allclose(
            raw.numpy(), torch.softmax(out.logits[i][0].float(), -1).numpy(), atol=1e-6
        )
        np.testing.assert_allclose(
            shaped.numpy(), torch.softmax(out.scores[i][0].float(), -1).numpy(), atol=1e-6
        )
        assert (shaped > 0).sum() <= 6  # top-k kept at most 6
        step = stepper.step(settings, pick=token)
        assert step.how == "picked" and step.prob_processed > 0


@pytest.mark.parametrize("kind", KINDS)
def test_undo_restores_the_exact_earlier_state(models, kind):
    loaded = models[kind]
    stepper = start(loaded)
    settings = Settings(temperature=1.3, seed=1)
    for pick in (10, 11, 12):  # not the end-of-sequence token
        stepper.step(settings, pick=pick)
    saved_logits = stepper._state.logits.clone()
    saved_steps = list(stepper.steps)
    for _ in range(4):
        if not stepper.finished:
            stepper.step(settings)
    undone = stepper.steps[3:]
    stepper.undo(3)
    assert stepper.steps == saved_steps
    if kind == "gemma3":  # past its window a sliding cache cannot go back: the prefix is run again
        torch.testing.assert_close(stepper._state.logits, saved_logits, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(stepper._state.logits, saved_logits)
    assert stepper.branches[-1].at == 3 and list(stepper.branches[-1].steps) == undone
    again = [stepper.step(settings).token_id for _ in range(len(undone))]
    assert again == [s.token_id for s in undone]  # same seeds per step: the same continuation
    stepper.undo(0)
    assert stepper.steps == [] and torch.equal(stepper._state.logits, stepper._first_logits)


def test_undoing_the_same_continuation_twice_keeps_one_branch(models):
    stepper = start(models["llama"])
    for _ in range(2):
        for pick in (10, 11, 12):
            stepper.step(Settings(), pick=pick)
        stepper.undo(0)
    assert len(stepper.branches) == 1 and [s.token_id for s in stepper.branches[0].steps] == [10, 11, 12]


def test_switching_back_to_a_branch(models):
    stepper = start(models["llama"])
    for pick in (10, 11, 12):
        stepper.step(Settings(), pick=pick)
    stepper.undo(1)
    stepper.step(Settings(), pick=20)
    branch = [b for b in stepper.branches if b.at == 1][0]
    stepper.switch(branch)
    assert [s.token_id for s in stepper.steps] == [10, 11, 12]
    assert [s.token_id for b in stepper.branches for s in b.steps] == [20]


def test_a_branch_comes_back_with_the_prefix_it_followed(models):
    """Undo to step 1, pick another token, undo to the prompt, pick a third, switch to the first branch: the
    text is that branch's own path (it was its tokens after the new first token, a text never generated)."""
    stepper = start(models["llama"])
    for pick in (10, 11, 12):
        stepper.step(Settings(), pick=pick)
    stepper.undo(1)  # branch A: 11 12 after 10
    stepper.step(Settings(), pick=20)
    stepper.undo(0)  # branch B: 10 20 after the prompt
    stepper.step(Settings(), pick=30)
    first = [b for b in stepper.branches if [s.token_id for s in b.steps] == [11, 12]][0]
    assert first.fork(stepper.steps) == 0  # it leaves the current path (30) at the prompt
    stepper.switch(first)
    assert [s.token_id for s in stepper.steps] == [10, 11, 12]
    expected = stepper.loaded.model(torch.tensor([stepper.prompt_ids + [10, 11, 12]])).logits[0, -1]
    torch.testing.assert_close(stepper._state.logits, expected, atol=1e-4, rtol=1e-4)
    # the others, drawn from where they leave the current path: B (10 20) after 10, the current 30 at 0
    forks = {tuple(s.token_id for s in b.path[b.fork(stepper.steps):]): b.fork(stepper.steps)
             for b in stepper.branches}  # fmt: skip
    assert forks == {(20,): 1, (30,): 0}


@pytest.mark.parametrize("kind", KINDS)
def test_cached_steps_give_the_logits_of_a_full_run(models, kind):
    loaded = models[kind]
    stepper = start(loaded)
    for pick in (10, 11, 12, 13, 14, 15):
        stepper.step(Settings(), pick=pick)
    with torch.no_grad():
        if stepper.source_ids is not None:
            full = loaded.model(
                input_ids=torch.tensor([stepper.source_ids]), decoder_input_ids=torch.tensor([stepper.ids])
            )
        else:
            full = loaded.model(torch.tensor([stepper.ids]))
    torch.testing.assert_close(stepper._state.logits, full.logits[0, -1].float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_each_step_keeps_the_new_tokens_attention(models, kind):
    loaded = models[kind]
    stepper = start(loaded)
    for pick in (10, 11, 12, 13, 14, 15):
        step = stepper.step(Settings(), pick=pick)
    n = len(stepper.ids)
    assert step.attention.shape[-1] == n
    np.testing.assert_allclose(step.attention.sum(-1), 1.0, atol=1e-5)
    if kind == "gemma3":  # layer 0 slides over 4 positions: nothing older gets weight
        assert (step.attention[0, :, : n - 4] == 0).all() and (step.attention[1, :, : n - 4] > 0).any()
    if stepper.source_ids is not None:
        assert step.cross_attention.shape[-1] == len(stepper.source_ids)
        np.testing.assert_allclose(step.cross_attention.sum(-1), 1.0, atol=1e-5)
    else:
        assert step.cross_attention is None


def test_end_of_sequence_and_refusals(models, tiny_dir):
    loaded = models["llama"]
    eos = min(eos_ids(loaded))
    stepper = start(loaded)
    stepper.step(Settings(), pick=eos)
    assert "end-of-sequence" in stepper.finished
    with pytest.raises(InputError, match="end-of-sequence"):
        stepper.step(Settings())
    stepper.undo(0)
    assert stepper.finished is None and stepper.step(Settings(), pick=10).token_id == 10
    with pytest.raises(InputError, match="encoder"):
        Stepper.start(load_model(LoadRequest("folder", str(tiny_dir("bert")))), PROMPT)
    with pytest.raises(InputError, match="empty"):
        Stepper.start(loaded, "  ")
    with pytest.raises(InputError, match="source"):
        Stepper.start(models["t5"], "", source="")
    with pytest.raises(InputError, match="Temperature"):
        stepper.step(Settings(temperature=0))
    with pytest.raises(InputError, match="no chat template"):
        Stepper.start(loaded, PROMPT, chat=True)
    with pytest.raises(InputError, match="context length"):
        Stepper.start(loaded, " ".join(["cat"] * 200))  # the tiny Llama reads 128 positions


def test_generate_command_prints_one_json_object_per_step(tiny_dir):
    import json

    from tests.unit.test_capture import _cli

    model = str(tiny_dir("llama"))
    done = _cli("generate", model, "--prompt", PROMPT, "--steps", "3", "--seed", "5", "--temperature", "0.9",
                "--top-k", "5", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["step"] for r in rows] == list(range(len(rows))) and 1 <= len(rows) <= 3
    for r in rows:
        assert set(r) >= {"step", "token_id", "token", "prob", "prob_processed", "rank", "top"}
        assert set(r["top"][0]) == {"token_id", "token", "prob", "prob_processed"}
        # top-k 5: the ten shown hold all of the shaped probability
        assert sum(c["prob_processed"] for c in r["top"]) == pytest.approx(1.0, abs=1e-5)
    bad = _cli("generate", model, "--prompt", PROMPT, "--steps", "0")
    assert bad.returncode == 1 and "--steps" in bad.stderr
