"""Token text: characters whose bytes several byte-level tokens hold are found and shown whole."""

from __future__ import annotations

import json

import pytest

from explorer.analyses.tokens import (
    BYTE_LEVEL,
    PLAIN,
    SENTENCEPIECE,
    WORDPIECE,
    _component,
    display_tokens,
    piece_style,
    split_characters,
    token_bytes,
)
from explorer.figures.steps import sequence_html
from explorer.runs.stepping import Step
from tests.conftest import tiny_tokenizer


def _fast(model, pre_tokenizer, decoder, **special):
    """A transformers tokenizer around a `tokenizers` model, with this pre-tokenizer and decoder (or none)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(model)
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    if decoder is not None:
        tok.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


@pytest.fixture(scope="module")
def bytes_tokenizer():
    """Byte-level BPE with no merges: one token per byte, so every non-ASCII character is split."""
    from tokenizers import decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    return _fast(
        models.BPE(vocab=vocab, merges=[]), pre_tokenizers.ByteLevel(add_prefix_space=False),
        decoders.ByteLevel(), eos_token="<eos>",
    )  # fmt: skip


def test_the_bytes_of_split_characters_come_back_together(bytes_tokenizer):
    text = "hi שלום 🙂"
    ids = bytes_tokenizer(text)["input_ids"]
    pieces = token_bytes(bytes_tokenizer, ids)
    assert b"".join(pieces) == text.encode()
    assert "\\x" in "".join(display_tokens(bytes_tokenizer, ids))  # token by token: escaped halves
    runs = split_characters(pieces)
    # 'h', 'i', ' ' are whole; each Hebrew letter is two tokens, the emoji four
    assert runs[3] == (5, "ש") and runs[5] == (7, "ל")
    assert [text for _, text in runs.values()] == ["ש", "ל", "ו", "ם", "🙂"]
    assert runs[12] == (16, "🙂")


def test_special_tokens_and_a_cut_character_are_left_alone(bytes_tokenizer):
    ids = bytes_tokenizer("ש")["input_ids"]
    eos = bytes_tokenizer.convert_tokens_to_ids("<eos>")
    assert split_characters(token_bytes(bytes_tokenizer, ids[:1] + [eos])) == {}  # cut, then special
    assert token_bytes(bytes_tokenizer, [eos]) == [None]


def test_the_generated_text_shows_the_character_once(bytes_tokenizer):
    ids = bytes_tokenizer("aש")["input_ids"]
    tokens = display_tokens(bytes_tokenizer, ids)
    steps = [
        Step(index=i, token_id=t, token=tokens[1 + i], prob=0.5, prob_processed=0.5, rank=1, how="greedy",
             seed=None, settings=None, top=(), attention=None)
        for i, t in enumerate(ids[1:])
    ]  # fmt: skip
    html = sequence_html(tokens[:1], steps, split_characters(token_bytes(bytes_tokenizer, ids)))
    assert "ש" in html and "\\x" not in html
    assert "its bytes in tokens 1 to 2" in html and "step 1:" in html and "step 2:" in html


@pytest.fixture(scope="module")
def kinds():
    """One small tokenizer of each kind whose style piece_style tells apart, built once."""
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"[UNK]": 0, "a": 1, "b": 2, "▁a": 3, "##b": 4}
    return {
        "byte-level": _fast(
            models.BPE(vocab=vocab, merges=[]), pre_tokenizers.ByteLevel(), decoders.ByteLevel()
        ),
        "byte-level in a sequence": _fast(
            models.BPE(vocab=vocab, merges=[]),
            pre_tokenizers.Sequence([pre_tokenizers.Digits(), pre_tokenizers.ByteLevel()]),
            None,
        ),
        "sentencepiece": _fast(
            models.Unigram([(p, -1.0) for p in vocab], 0, byte_fallback=False),
            pre_tokenizers.Metaspace(),
            decoders.Metaspace(),
        ),
        "sentencepiece, decoded by replacing ▁": _fast(  # Gemma's and Llama 2's kind
            models.BPE(vocab=vocab, merges=[], byte_fallback=True),
            pre_tokenizers.Split(" ", "merged_with_previous"),
            decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]),
        ),
        "wordpiece": _fast(
            models.WordPiece(vocab, unk_token="[UNK]"), pre_tokenizers.BertPreTokenizer(), None
        ),
        "plain": tiny_tokenizer(),  # the tiny models' word-level one
    }


@pytest.mark.parametrize(
    ("kind", "style"),
    [("byte-level", BYTE_LEVEL), ("byte-level in a sequence", BYTE_LEVEL), ("sentencepiece", SENTENCEPIECE),
     ("sentencepiece, decoded by replacing ▁", SENTENCEPIECE), ("wordpiece", WORDPIECE), ("plain", PLAIN)],
)  # fmt: skip
def test_the_piece_style_is_read_from_the_components_as_from_the_whole_tokenizer(kinds, kind, style):
    """The style comes from the pre-tokenizer, the decoder and the model type, each read on its own (the
    whole tokenizer's JSON holds the vocabulary: seconds on a 262k-word one); they are the same entries
    as in that JSON."""
    tokenizer = kinds[kind]
    assert piece_style.__wrapped__(tokenizer) == style
    backend = tokenizer.backend_tokenizer
    whole = json.loads(backend.to_str())
    assert _component(backend.pre_tokenizer) == whole["pre_tokenizer"]
    assert _component(backend.decoder) == whole["decoder"]
    assert type(backend.model).__name__ == whole["model"]["type"]
