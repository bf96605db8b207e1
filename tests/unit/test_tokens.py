"""Token text: characters whose bytes several byte-level tokens hold are found and shown whole."""

from __future__ import annotations

import pytest

from explorer.analyses.tokens import display_tokens, split_characters, token_bytes
from explorer.figures.steps import sequence_html
from explorer.runs.stepping import Step


@pytest.fixture(scope="module")
def bytes_tokenizer():
    """Byte-level BPE with no merges: one token per byte, so every non-ASCII character is split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


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
