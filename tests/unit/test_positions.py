"""Positions and tokens: the tables and numbers the Positions and Tokens pages show."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer.analyses import positions, token_table
from tests.unit.test_scratch import gemma_config


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
    return tiny_loaded


def test_sinusoidal_follows_the_paper():
    table = positions.sinusoidal(50, 16)
    pos, i = 7, 3
    assert table[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert table[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert (table[0, 0::2] == 0).all() and (table[0, 1::2] == 1).all()


def test_learned_tables(loaded):
    gpt2 = loaded("gpt2").model
    table, offset = positions.learned_table(gpt2)
    assert offset == 0 and np.array_equal(table, gpt2.transformer.wpe.weight.numpy())
    bart = loaded("bart").model
    table, offset = positions.learned_table(bart)
    assert offset == 2 and table.shape[0] == bart.config.max_position_embeddings
    sim = positions.cosine_similarity(table[:10])
    assert np.allclose(np.diag(sim), 1, atol=1e-5) and np.allclose(sim, sim.T, atol=1e-6)


def test_rotary_sets_follow_the_config(loaded):
    import transformers as tf

    llama = loaded("llama").model
    (one,) = positions.rotary_sets(llama)
    d_head = llama.config.hidden_size // llama.config.num_attention_heads
    expected = 1.0 / (one.theta ** (np.arange(0, d_head, 2) / d_head))
    assert np.allclose(one.inv_freq, expected, rtol=1e-6) and one.layers == (0, 1)
    decay = positions.rotary_decay(one.inv_freq, np.arange(100))
    assert decay[0] == pytest.approx(1.0) and (np.abs(decay) <= 1 + 1e-9).all()
    gemma = tf.Gemma3ForCausalLM(gemma_config())
    sets = {s.name: s for s in positions.rotary_sets(gemma)}
    assert set(sets) == {"full_attention", "sliding_attention"}
    assert sets["sliding_attention"].layers == (0, 1) and sets["full_attention"].layers == (2,)
    assert sets["full_attention"].theta > sets["sliding_attention"].theta
    assert (
        positions.wavelengths(sets["full_attention"].inv_freq)[-1]
        > positions.wavelengths(sets["sliding_attention"].inv_freq)[-1]
    )


def test_t5_relative_bias_is_the_table_of_the_first_block(loaded):
    t5 = loaded("t5").model
    rb = positions.t5_relative(t5, "encoder", reach=20)
    table = t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert rb.bias.shape == (4, 41)
    assert np.allclose(rb.bias[:, 20], table[rb.buckets[20]].detach().numpy())  # distance 0
    assert rb.buckets[20] == 0 and rb.buckets[21] == 16 + 1  # one key ahead: the upper half
    dec = positions.t5_relative(t5, "decoder", reach=20)
    assert (dec.buckets[21:] == 0).all()  # a decoder folds every key ahead into bucket 0


def test_token_rows_and_chips_escape():
    from tests.conftest import tiny_tokenizer

    tok = tiny_tokenizer()
    rows = token_table.split(tok, "the cat sat")
    assert [r.text for r in rows] == ["the", "cat", "sat"]
    assert [r.id for r in rows] == tok("the cat sat")["input_ids"]
    fake = [token_table.TokenRow(0, 1, "<img src=x>", "<img src=x onerror=alert(1)>", False)]
    html = token_table.chips_html(fake)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'title="#0 · id 1 · stored as &#x27;&lt;img src=x&gt;&#x27;"' in html


def test_embedded_tokenizer_reads_only_the_tokenizer(monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    tok = token_table.embedded_tokenizer("all-minilm-l6-v2")
    assert [r.text for r in token_table.split(tok, "hello")][1] == "hello"
