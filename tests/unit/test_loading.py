"""Loading tiny checkpoints of every family through the same path as a user's folder."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from explorer.models.card import build_card, detect_family, parameter_groups
from explorer.models.loading import LoadRequest, estimate_bytes
from tests.conftest import FAMILIES, MODEL_CLASSES, VOCAB, tiny_config, tiny_tokenizer

KINDS = list(MODEL_CLASSES)


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
    return tiny_loaded


@pytest.mark.parametrize("kind", KINDS)
def test_family_and_class(kind, loaded):
    lm = loaded(kind)
    assert lm.card.family == FAMILIES[kind]
    assert detect_family(tiny_config(kind)) == FAMILIES[kind]
    assert lm.card.architecture == MODEL_CLASSES[kind]
    assert lm.model.config._attn_implementation == "eager"
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_card_numbers_match_config(kind, loaded):
    card, config = loaded(kind).card, tiny_config(kind)
    fresh = getattr(tf, MODEL_CLASSES[kind])(config)
    assert card.n_params == sum(p.numel() for p in fresh.parameters())
    assert card.d_model == config.hidden_size == 32
    assert card.n_heads == config.num_attention_heads == 4
    assert card.vocab_size == config.vocab_size == len(VOCAB)
    assert card.dtype == "float32" and card.device == "cpu"
    weights = sum(p.numel() * 4 for p in {id(p): p for p in fresh.parameters()}.values())
    assert (
        weights <= card.memory_bytes <= weights + sum(b.numel() * b.element_size() for b in fresh.buffers())
    )


def test_encoder_numbers(loaded):
    card = loaded("bert").card
    assert (card.n_layers, card.n_kv_heads, card.d_ff, card.d_head) == (2, 4, 64, 8)
    assert card.context_length == 64
    assert card.position_encoding == "learned absolute (64 positions)"
    assert card.norm.startswith("LayerNorm") and card.norm_placement.startswith("post-norm")
    assert card.attention == "multi-head"


def test_decoder_numbers(loaded):
    gpt2, llama = loaded("gpt2").card, loaded("llama").card
    assert (gpt2.n_layers, gpt2.d_ff, gpt2.context_length) == (2, 128, 64)  # n_inner=None -> 4 x n_embd
    assert gpt2.position_encoding.startswith("learned absolute") and gpt2.norm_placement.startswith(
        "pre-norm"
    )
    assert gpt2.tied_embeddings
    assert (llama.n_heads, llama.n_kv_heads, llama.d_ff) == (4, 2, 48)
    assert llama.attention.startswith("grouped-query (2 query heads share each of 2")
    assert llama.position_encoding.startswith("rotary") and llama.norm.startswith("RMSNorm")
    assert llama.ffn == "gated MLP (SwiGLU)"


def test_encoder_decoder_numbers(loaded):
    t5, bart = loaded("t5").card, loaded("bart").card
    assert (t5.encoder_layers, t5.decoder_layers, t5.n_layers) == (2, 3, 5)
    assert t5.d_head == 8 and t5.d_ff == 64
    assert t5.position_encoding == "relative position bias (32 buckets, T5-style)"
    assert t5.norm.startswith("RMSNorm")
    assert (bart.encoder_layers, bart.decoder_layers) == (2, 2)
    assert bart.position_encoding.startswith("learned absolute")
    data = t5.to_dict()
    assert data["encoder_layers"] == 2 and data["decoder_layers"] == 3
    assert "encoder_layers" not in loaded("gpt2").card.to_dict()


def test_grouped_query_gives_one_map_per_query_head(loaded):
    lm = loaded("llama")
    ids = lm.tokenizer("the cat sat on the mat", return_tensors="pt").input_ids
    out = lm.model(ids, output_attentions=True)
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (1, 4, ids.shape[1], ids.shape[1])  # 4 query heads, 2 kv heads
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(1, 4, ids.shape[1]))


@pytest.mark.parametrize("kind", KINDS)
def test_memory_estimate_equals_loaded_size(kind, loaded):
    lm = loaded(kind)  # its config names the saved architecture, as a user's config.json does
    assert estimate_bytes(lm.model.config, FAMILIES[kind], torch.float32) == lm.card.memory_bytes


def test_family_from_architectures_and_type():
    assert detect_family(tf.AutoConfig.for_model("gpt2")) == "decoder"
    assert detect_family(tf.AutoConfig.for_model("roberta")) == "encoder"
    assert detect_family(tf.AutoConfig.for_model("mistral")) == "decoder"
    assert detect_family(tf.AutoConfig.for_model("marian")) == "encoder-decoder"
    assert detect_family(tf.BertConfig(is_decoder=True)) == "decoder"


def test_request_parse(tmp_path):
    assert LoadRequest.parse("smollm2-135m-instruct").source == "embedded"
    assert LoadRequest.parse("gpt2").source == "hub"
    assert LoadRequest.parse("google-t5/t5-small").source == "hub"
    assert LoadRequest.parse(str(tmp_path)).source == "folder"
    assert LoadRequest.parse("/x/model.Q4.gguf").source == "gguf"


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_groups_add_up(kind, loaded):
    lm = loaded(kind)
    groups = parameter_groups(lm.model)
    assert sum(groups.values()) == lm.card.n_params
    assert all(v > 0 for v in groups.values())
    assert ("cross-attention" in groups) == (FAMILIES[kind] == "encoder-decoder")


def test_parameter_groups_match_hand_counts(loaded):
    d, kv, ff, layers = 32, 2 * 8, 48, 2  # tiny Llama: 4 query heads of 8, 2 key/value heads, no biases
    groups = parameter_groups(loaded("llama").model)
    assert groups["attention"] == layers * (d * d + 2 * d * kv + d * d)
    assert groups["feed-forward"] == layers * 3 * d * ff
    assert groups["normalization"] == (2 * layers + 1) * d
    t5 = parameter_groups(loaded("t5").model)
    assert t5["cross-attention"] == 3 * 4 * d * d  # 3 decoder layers, q k v o of 32 x 32


def test_sliding_window_only_where_layers_use_it():
    qwen = tf.Qwen2Config(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=16, use_sliding_window=False,
    )  # fmt: skip
    gemma = tf.Gemma3TextConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=3, head_dim=8,
        num_attention_heads=4, num_key_value_heads=1, sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    )  # fmt: skip
    tok = tiny_tokenizer()
    no_window = build_card(tf.Qwen2ForCausalLM(qwen), tok, name="q", source="folder")
    window = build_card(tf.Gemma3ForCausalLM(gemma), tok, name="g", source="folder")
    assert no_window.sliding_window is None and no_window.layer_types == ()
    assert window.sliding_window == 16
    assert window.layer_types == ("sliding_attention", "sliding_attention", "full_attention")
    assert window.attention.startswith("multi-query") and window.d_head == 8
    assert window.norm_placement.startswith("pre- and post-norm")
