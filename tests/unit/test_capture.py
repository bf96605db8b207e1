"""The capture on tiny models of each family: shapes, rows that sum to 1, causal masks, a hand
computation of one head from the model's own weights, the NPZ export and the trace command."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess

import numpy as np
import pytest
import torch

from explorer.errors import InputError
from explorer.runs.capture import capture
from explorer.runs.export import write_npz

TEXT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def models(tiny_loaded):
    return {kind: tiny_loaded(kind) for kind in FAMILY_KINDS}


FAMILY_KINDS = ["bert", "gpt2", "llama", "t5", "bart"]


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_shapes_of_a_single_stack(models, kind):
    loaded = models[kind]
    cap = capture(loaded, TEXT)
    config = loaded.model.config
    n = len(cap.sequence)
    assert n == len(loaded.tokenizer(TEXT)["input_ids"])
    # one map per query head, also for the grouped-query Llama (4 query heads share 2 key/value heads)
    assert cap.attentions.shape == (config.num_hidden_layers, config.num_attention_heads, n, n)
    assert cap.hidden_states.shape == (config.num_hidden_layers + 1, n, config.hidden_size)
    assert cap.attentions.dtype == np.float32
    assert [s.name for s in cap.attention_sets()] == ["self"]


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_shapes_of_an_encoder_decoder(models, kind):
    loaded = models[kind]
    cap = capture(loaded, TEXT, target="the dog ran")
    src, tgt = len(cap.source), len(cap.sequence)
    assert cap.sequence.ids[0] == loaded.model.config.decoder_start_token_id
    assert tgt == 4  # the start token, then "the dog ran" (no end-of-sequence: a prefix)
    heads = cap.attentions.shape[1]
    n_dec = cap.attentions.shape[0]
    assert cap.encoder_attentions.shape[2:] == (src, src)
    assert cap.attentions.shape[2:] == (tgt, tgt)
    assert cap.cross_attentions.shape == (n_dec, heads, tgt, src)
    assert cap.encoder_hidden_states.shape[:2] == (cap.encoder_attentions.shape[0] + 1, src)
    assert cap.hidden_states.shape[:2] == (n_dec + 1, tgt)
    assert [s.name for s in cap.attention_sets()] == ["encoder", "decoder", "cross"]


def test_an_encoder_decoder_without_target_reads_its_own_output(models):
    loaded = models["bart"]
    cap = capture(loaded, TEXT)
    assert cap.target_generated
    expected = loaded.model.generate(
        input_ids=loaded.tokenizer(TEXT, return_tensors="pt")["input_ids"], max_new_tokens=48, do_sample=False
    )[0].tolist()
    assert list(cap.sequence.ids) == expected


@pytest.mark.parametrize("kind", FAMILY_KINDS)
def test_every_attention_row_sums_to_one(models, kind):
    cap = capture(models[kind], TEXT, target="the dog" if kind in ("t5", "bart") else None)
    for s in cap.attention_sets():
        np.testing.assert_allclose(s.maps.sum(-1), 1.0, atol=1e-5, err_msg=s.name)
        assert (s.maps >= 0).all()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
def test_causal_self_attention_has_a_zero_upper_triangle(models, kind):
    cap = capture(models[kind], TEXT, target="the dog ran to" if kind in ("t5", "bart") else None)
    causal = [s for s in cap.attention_sets() if s.causal]
    assert len(causal) == 1
    maps = causal[0].maps
    n = maps.shape[-1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    assert (maps[..., upper] == 0).all()
    assert (maps[..., ~upper] > 0).any()


def test_encoder_attention_is_not_causal(models):
    maps = capture(models["bert"], TEXT).attentions
    n = maps.shape[-1]
    assert (maps[..., np.triu(np.ones((n, n), dtype=bool), k=1)] > 0).all()


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores, dim=-1)


def test_bert_head_equals_a_hand_computation(models):
    loaded = models["bert"]
    cap = capture(loaded, TEXT)
    layer, head = 1, 2
    attn = loaded.model.base_model.encoder.layer[layer].attention.self
    d = loaded.model.config.hidden_size // loaded.model.config.num_attention_heads
    x = torch.from_numpy(cap.hidden_states[layer])  # the block's input: [pos, d_model]
    sl = slice(head * d, (head + 1) * d)
    q = x @ attn.query.weight[sl].T + attn.query.bias[sl]  # [pos, d_head]
    k = x @ attn.key.weight[sl].T + attn.key.bias[sl]
    expected = _softmax(q @ k.T / math.sqrt(d))
    np.testing.assert_allclose(cap.attentions[layer, head], expected.numpy(), atol=1e-6)


def test_gpt2_head_equals_a_hand_computation(models):
    loaded = models["gpt2"]
    cap = capture(loaded, TEXT)
    layer, head = 1, 3
    block = loaded.model.transformer.h[layer]
    d_model = loaded.model.config.n_embd
    d = d_model // loaded.model.config.n_head
    x = block.ln_1(torch.from_numpy(cap.hidden_states[layer]))  # [pos, d_model]
    qkv = x @ block.attn.c_attn.weight + block.attn.c_attn.bias  # Conv1D: [pos, 3 * d_model]
    q = qkv[:, head * d : (head + 1) * d]
    k = qkv[:, d_model + head * d : d_model + (head + 1) * d]
    n = x.shape[0]
    mask = torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
    expected = _softmax(q @ k.T / math.sqrt(d) + mask)
    np.testing.assert_allclose(cap.attentions[layer, head], expected.numpy(), atol=1e-6)


def test_empty_text_too_long_text_and_too_little_memory_are_refused(models):
    with pytest.raises(InputError, match="empty"):
        capture(models["gpt2"], "   ")
    with pytest.raises(InputError, match="at most 4 tokens"):
        capture(models["gpt2"], TEXT, max_tokens=4)
    with pytest.raises(InputError, match="free memory"):
        capture(models["gpt2"], TEXT, free_bytes=1000)
    # the tiny GPT-2 reads at most 64 positions (n_positions)
    with pytest.raises(InputError, match="at most 64"):
        capture(models["gpt2"], " ".join(["cat"] * 65))


def test_npz_round_trips(models, tmp_path):
    cap = capture(models["llama"], TEXT)
    write_npz(cap, tmp_path / "c.npz")
    data = np.load(tmp_path / "c.npz")
    assert data["attentions"].dtype == np.float32
    np.testing.assert_array_equal(data["attentions"], cap.attentions)
    np.testing.assert_array_equal(data["hidden_states"], cap.hidden_states)
    assert list(data["tokens"]) == list(cap.sequence.tokens)
    assert list(data["token_ids"]) == list(cap.sequence.ids)

    cap = capture(models["t5"], TEXT, target="the dog")
    write_npz(cap, tmp_path / "s.npz")
    data = np.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(data["cross_attentions"], cap.cross_attentions)
    np.testing.assert_array_equal(data["encoder_attentions"], cap.encoder_attentions)
    np.testing.assert_array_equal(data["decoder_attentions"], cap.attentions)
    np.testing.assert_array_equal(data["encoder_hidden_states"], cap.encoder_hidden_states)
    np.testing.assert_array_equal(data["decoder_hidden_states"], cap.hidden_states)
    assert list(data["encoder_tokens"]) == list(cap.source.tokens)
    assert list(data["decoder_tokens"]) == list(cap.sequence.tokens)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m explorer ARGS` run in this process: its exit code, stdout and stderr. (A process of its
    own spends 6 to 10 s importing torch and transformers on 2 cores; tests/unit/test_errors.py runs the
    command in one, with the environment of a machine that is offline.)"""
    from explorer.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse refusing the arguments
            code = exit_.code
    return subprocess.CompletedProcess(
        ["python", "-m", "explorer", *args], code, out.getvalue(), err.getvalue()
    )


def test_trace_command_writes_the_capture(tiny_dir, tmp_path):
    out = tmp_path / "t.npz"
    done = _cli("trace", str(tiny_dir("t5")), "--text", TEXT, "--target", "the dog", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    data = np.load(out)
    assert summary["tokens"] == list(data["decoder_tokens"])
    assert set(data.files) >= {
        "encoder_tokens", "decoder_tokens", "encoder_attentions", "decoder_attentions", "cross_attentions",
        "encoder_hidden_states", "decoder_hidden_states",
    }  # fmt: skip
    assert data["cross_attentions"].shape[2:] == (len(data["decoder_tokens"]), len(data["encoder_tokens"]))

    done = _cli("trace", str(tiny_dir("gpt2")), "--text", "", "--out", str(out))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "empty" in done.stderr
    done = _cli("trace", str(tiny_dir("gpt2")), "--text", TEXT, "--target", "x", "--out", str(out))
    assert done.returncode == 1 and "encoder-decoders" in done.stderr
