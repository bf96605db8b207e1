"""The real embedded checkpoints (slow: each loads a model of 23-268 M parameters)."""

from __future__ import annotations

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


def test_a_gguf_converts_once_into_what_transformers_own_gguf_load_gives(tmp_path, monkeypatch):
    """A GGUF path given by a user converts into the cache on the first load and reads it after; the
    converted safetensors give the logits of transformers' own GGUF load (the model and tokenizer that
    the conversion got from AutoModelForCausalLM.from_pretrained(gguf_file=...), kept aside here), and so
    does the embedded SmolLM2's conversion cached by `make models`: one GGUF load of 20 s for all of it."""
    monkeypatch.setenv("TRANSFORMER_EXPLORER_CACHE", str(tmp_path / "cache"))
    item = zoo.entry("smollm2-135m-instruct")
    _, path = item.locate(item, tmp_path)
    gguf_loads = []
    real_load = convert._load_gguf

    def kept(*args, **kwargs):
        gguf_loads.append(real_load(*args, **kwargs))
        return gguf_loads[-1]

    monkeypatch.setattr(convert, "_load_gguf", kept)
    first = load_model(LoadRequest("gguf", str(path)))
    key = convert.file_key(path)
    assert convert.is_converted(key) and first.weights_from == str(convert.converted_path(key))
    assert len(gguf_loads) == 1
    monkeypatch.setattr(convert, "_load_gguf", _no_second_conversion)
    second = load_model(LoadRequest("gguf", str(path)))
    assert second.weights_from == first.weights_from
    assert second.card == first.card

    direct, tokenizer = gguf_loads[0]
    direct.set_attn_implementation("eager")  # as the app loads; the GGUF load took transformers' default
    direct.eval()
    text = "The capital of France is"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == first.tokenizer(text, return_tensors="pt").input_ids.tolist()
    monkeypatch.delenv("TRANSFORMER_EXPLORER_CACHE")
    embedded = load_model(LoadRequest("embedded", item.name))
    assert embedded.weights_from == str(convert.converted_path(item.cache_key))
    with torch.no_grad():
        expected = direct(ids).logits
        for loaded in (first, second, embedded):
            assert torch.equal(loaded.model(ids).logits, expected), loaded.weights_from


def _no_second_conversion(*args, **kwargs):
    raise AssertionError("the GGUF was converted again")
