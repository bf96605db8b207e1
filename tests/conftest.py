"""Shared fixtures: tiny checkpoints of each family, built from configs and saved like a user's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the cat sat on mat because it was tired a dog ran to park and then slept "
    "date year month day is in of for with what where who when how big small"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}


def tiny_tokenizer():
    """A word-level tokenizer over a fixed vocabulary, made with the tokenizers library."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", bos_token="<s>", eos_token="</s>",
    )  # fmt: skip


def tiny_config(kind: str):
    """Configs of 2-3 layers, hidden size 32, 4 heads, with `architectures` set as save_pretrained would."""
    import transformers as tf

    v = len(VOCAB)
    configs = {
        "bert": tf.BertConfig(
            vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64,
        ),
        "gpt2": tf.GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=64),
        "llama": tf.LlamaConfig(
            vocab_size=v, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        ),
        "t5": tf.T5Config(
            vocab_size=v, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
            num_heads=4, decoder_start_token_id=0, pad_token_id=0,
        ),
        "bart": tf.BartConfig(
            vocab_size=v, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        ),
    }  # fmt: skip
    return configs[kind]


MODEL_CLASSES = {
    "bert": "BertForMaskedLM",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
}
FAMILIES = {
    "bert": "encoder",
    "gpt2": "decoder",
    "llama": "decoder",
    "t5": "encoder-decoder",
    "bart": "encoder-decoder",
}


def save_tiny(kind: str, folder: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = getattr(tf, MODEL_CLASSES[kind])(tiny_config(kind))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Returns a function kind -> folder of a saved tiny checkpoint (built once per test session)."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = save_tiny(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))
        return made[kind]

    return get


@pytest.fixture(scope="session")
def tiny_loaded(tiny_dir):
    """Returns a function kind -> the tiny checkpoint loaded through explorer.loading (once per test
    session: like the app's shared models, tests only read them)."""
    from explorer.loading import LoadRequest, load_model

    made: dict = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = load_model(LoadRequest("folder", str(tiny_dir(kind))))
        return made[kind]

    return get
