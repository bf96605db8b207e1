"""The real embedded checkpoints (slow: each loads a model of 23-268 M parameters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from explorer.models import convert, zoo
from explorer.models.loading import LoadRequest, load_model

pytestmark = pytest.mark.slow

EXPECTED = {
    # name: (family, layers, heads, kv heads, d_model, d_ff, vocab, architecture)
    "smollm2-135m-instruct": ("decoder", 30, 9, 3, 576, 1536, 49152, "LlamaForCausalLM"),
    "gemma-3-270m": ("decoder", 18, 4, 1, 640, 2048, 262144, "Gemma3ForCausalLM"),
    "all-minilm-l6-v2": ("encoder", 6, 12, 12, 384, 1536, 30522, "BertModel"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_embedded_card(name):
    card = load_model(LoadRequest("embedded", name)).card
    family, layers, heads, kv, d_model, d_ff, vocab, arch = EXPECTED[name]
    assert (card.family, card.n_layers, card.n_heads, card.n_kv_heads) == (family, layers, heads, kv)
    assert (card.d_model, card.d_ff, card.vocab_size, card.architecture) == (d_model, d_ff, vocab, arch)
    if name == "gemma-3-270m":
        assert card.sliding_window == 512 and card.d_head == 256
        assert card.layer_types.count("full_attention") == 3 and card.layer_types[5] == "full_attention"
        assert card.norm_placement.startswith("pre- and post-norm")
    if name == "smollm2-135m-instruct":
        assert card.chat_template and card.attention.startswith("grouped-query")
        assert card.n_params == 134_515_008


def test_converted_smollm2_equals_the_gguf_load():
    """The cached safetensors give the same logits as transformers' own GGUF load."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    item = zoo.entry("smollm2-135m-instruct")
    gguf = Path(importlib.util.find_spec(item.module).submodule_search_locations[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    direct = AutoModelForCausalLM.from_pretrained(
        gguf, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file=name)
    cached = load_model(LoadRequest("embedded", item.name))
    assert cached.weights_from == str(convert.converted_path(item.cache_key))
    text = "The capital of France is"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == cached.tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        expected = direct(ids).logits
        got = cached.model(ids).logits
    assert torch.equal(expected, got)


def test_user_gguf_is_converted_once(tmp_path, monkeypatch):
    """A GGUF path given by a user converts into the cache on the first load and reads it after."""
    monkeypatch.setenv("TRANSFORMER_EXPLORER_CACHE", str(tmp_path / "cache"))
    item = zoo.entry("smollm2-135m-instruct")
    _, path = item.locate(item, tmp_path)
    first = load_model(LoadRequest("gguf", str(path)))
    key = convert.file_key(path)
    assert convert.is_converted(key) and first.weights_from == str(convert.converted_path(key))
    monkeypatch.setattr(convert, "_load_gguf", _no_second_conversion)
    second = load_model(LoadRequest("gguf", str(path)))
    assert second.weights_from == first.weights_from
    assert second.card == first.card
    ids = first.tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, second.model(ids).logits)


def _no_second_conversion(*args, **kwargs):
    raise AssertionError("the GGUF was converted again")
