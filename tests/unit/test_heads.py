"""The head detector finds heads made by hand to do each pattern: one head of a tiny model is given the
pattern through transformers' attention interface (its weights and its output), and must come out first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as tf
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import eager_attention_forward

from explorer.__main__ import main as cli
from explorer.analyses import heads
from explorer.errors import InputError
from explorer.runs import hooked
from tests.conftest import VOCAB, load_as_folder

LAYER, HEAD = 1, 3
SEED, LENGTH = 7, 12


def pattern(kind: str, ids: list[int]) -> torch.Tensor:
    """(q, k) rows of weights doing `kind` on `ids`; a row with nothing to do attends to itself."""
    n = len(ids)
    p = torch.zeros(n, n)
    for q in range(n):
        if kind == "previous":
            keys = [q - 1] if q else []
        elif kind == "two back":
            keys = [q - 2] if q >= 2 else []
        elif kind == "first":
            keys = [0]
        elif kind == "duplicate":
            keys = [j for j in range(q) if ids[j] == ids[q]]
        else:  # induction
            keys = [j + 1 for j in range(q - 1) if ids[j] == ids[q]]
        for k in keys or [q]:
            p[q, k] = 1.0 / len(keys or [q])
    return p


def handmade(kind: str, ids: list[int]):
    """An attention function: eager attention everywhere, except head HEAD of layer LAYER, whose weights
    are the pattern and whose output is those weights times its values."""
    wanted = pattern(kind, ids)

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout,
                                               **kwargs)  # fmt: skip
        if module.layer_idx == LAYER:
            weights = weights.clone()
            weights[:, HEAD] = wanted.to(weights.dtype)
            group = query.shape[1] // value.shape[1]
            out = out.clone()
            out[:, :, HEAD] = weights[:, HEAD] @ value[:, HEAD // group]  # (batch, q, d_head)
        return out, weights

    return attention


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=128)  # fmt: skip
    return load_as_folder(tf.LlamaForCausalLM(config), tmp_path_factory.mktemp("heads-llama"))


@pytest.mark.parametrize("kind", list(heads.DETECTORS))
def test_a_head_made_to_do_the_pattern_comes_first(llama, kind):
    ids = heads.probe(llama, SEED, LENGTH)
    name = f"handmade-{kind}"
    AttentionInterface.register(name, handmade(kind, ids))
    llama.model.set_attn_implementation(name)
    try:
        found = heads.detect(llama, kind, seed=SEED, length=LENGTH)
    finally:
        llama.model.set_attn_implementation("eager")
    top = found.ranked()[0]
    assert (top["layer"], top["head"]) == (LAYER, HEAD)
    assert top["score"] == pytest.approx(1.0, abs=1e-6)  # every scored row of the head does the pattern
    assert found.ranked()[1]["score"] < 0.9


def test_the_probe_is_random_tokens_repeated(llama):
    ids = heads.probe(llama, SEED, LENGTH)
    assert ids[-LENGTH:] == ids[-2 * LENGTH : -LENGTH]
    assert not set(ids[-LENGTH:]) & set(llama.tokenizer.all_special_ids)
    assert heads.probe(llama, SEED, LENGTH) == ids and heads.probe(llama, SEED + 1, LENGTH) != ids


def test_scores_on_maps_written_by_hand():
    ids = [5, 6, 7, 5, 6, 7]
    n = len(ids)
    maps = np.zeros((1, 4, n, n), dtype=np.float32)
    maps[0, 0] = pattern("previous", ids).numpy()
    maps[0, 1] = pattern("duplicate", ids).numpy()
    maps[0, 2] = pattern("induction", ids).numpy()
    maps[0, 3] = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]  # uniform causal
    for kind, head in (("previous", 0), ("duplicate", 1), ("induction", 2)):
        s = heads.scores(maps, ids, kind)[0]
        assert int(np.argmax(s)) == head and s[head] == pytest.approx(1.0)
    # the uniform head: on the query 3 (a copy of 0), 1/4 on each of the keys 0..3
    assert heads.scores(maps, ids, "first")[0, 3] == pytest.approx(np.mean(1 / np.arange(1, n + 1)))


@pytest.mark.parametrize("kind", list(heads.DETECTORS) + ["two back"])
def test_each_rule_ticks_the_keys_a_head_doing_it_attends_to(kind):
    ids = [5, 6, 7, 5, 6, 7, 8, 5]
    want = heads.rule(kind, ids)
    made = pattern(kind, ids).numpy() > 0
    rows = want.any(-1)
    assert (want[rows] == made[rows]).all()
    assert (made[~rows] == np.eye(len(ids), dtype=bool)[~rows]).all()  # nothing to do: itself


def test_cells_are_written_and_read_back():
    want = heads.rule("duplicate", [5, 6, 5, 6, 5])
    text = heads.format_cells(want)
    assert text == "2:0;3:1;4:0,2"
    assert (heads.parse_cells(text, want.shape) == want).all()
    for bad in ("2:x", "9:0", "2:0,7", "two"):
        with pytest.raises(InputError):
            heads.parse_cells(bad, want.shape)


TEXT = "the cat sat on the mat because it was tired and the dog was not"


def test_a_head_made_to_do_a_drawn_pattern_on_a_text_comes_first(llama, capsys):
    ids = hooked.encode(llama.model, llama.tokenizer, TEXT)
    AttentionInterface.register("handmade-two-back", handmade("two back", ids))
    llama.model.set_attn_implementation("handmade-two-back")
    cells = heads.format_cells(heads.rule("two back", ids))
    try:
        found = heads.on_text(llama, TEXT, cells)
        assert cli(["heads", llama.weights_from, "--detect", "pattern", "--pattern", cells, "--text", TEXT,
                    "--json"]) == 0  # fmt: skip
    finally:
        llama.model.set_attn_implementation("eager")
    top = found.ranked()[0]
    assert (top["layer"], top["head"]) == (LAYER, HEAD) and top["score"] == pytest.approx(1.0, abs=1e-6)
    assert found.ranked()[1]["score"] < 0.9
    assert found.ids == tuple(ids)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8  # the command loads its own copy: plain eager attention, every head scored


def test_a_drawn_pattern_cannot_ask_a_causal_model_for_later_keys(llama):
    with pytest.raises(InputError, match="later key"):
        heads.on_text(llama, TEXT, "1:2")


def test_the_command_prints_every_head_highest_first(tiny_dir, capsys):
    assert cli(["heads", str(tiny_dir("gpt2")), "--detect", "previous", "--length", "8", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 * 4 and {tuple(r) for r in rows} == {("layer", "head", "score")}
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_an_encoder_decoder_is_scored_on_what_each_stack_reads(tiny_loaded):
    loaded = tiny_loaded("t5")
    enc = heads.detect(loaded, "induction", length=8, stack="encoder")
    dec = heads.detect(loaded, "induction", length=8)
    assert dec.stack == "decoder" and dec.ids[1:] == enc.ids[:-1]  # shifted right behind the start token
    assert enc.scores.shape == (2, 4) and dec.scores.shape == (3, 4)
