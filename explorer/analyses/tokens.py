"""Token pieces made readable: what each id of a tokenizer stands for, as a person would write it.

Tokenizers store pieces in their own encodings: byte-level BPE (GPT-2, Llama 3, SmolLM2) maps every byte
to a printable character (`Ġ` is a space, `Ċ` a newline), SentencePiece marks a word start with `▁` and
may fall back to bytes (`<0x0A>`), WordPiece marks a word's continuation with `##`. `display_tokens`
turns them into text: spaces as `␣`, newlines as `↵`, tabs as `⇥`, other control characters as their
control pictures (`␛`), direction overrides and zero-width marks as `⟨U+202E⟩`, bytes that are not a
whole character as `\\xNN`. The result is plain text: callers escape it for wherever it is shown.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Sequence

BYTE_LEVEL = "byte-level"
SENTENCEPIECE = "sentencepiece"
WORDPIECE = "wordpiece"
PLAIN = "plain"

VISIBLE = str.maketrans(
    {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "⏎"}
    # other control characters as their control pictures (␀, ␇, ␛ ...) and C1 controls as escapes:
    # a raw ESC or NUL in a page or a figure is invisible or worse
    | {chr(c): chr(0x2400 + c) for c in range(32) if chr(c) not in " \n\t\r"}
    | {"\x7f": "␡"}
    | {chr(c): f"\\x{c:02x}" for c in range(0x80, 0xA0)}
    # direction overrides and invisible marks would reorder or hide the tokens shown after them
    | {
        chr(c): f"⟨U+{c:04X}⟩"
        for c in [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    }
    | {"\ufeff": "⟨U+FEFF⟩"}
)
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_table() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins, character -> byte: printable Latin-1 bytes stand for
    themselves; the other 68 bytes (controls, space, soft hyphen ...) take the code points from 256 up,
    in byte order."""
    ranges = [("!", "~"), ("¡", "¬"), ("®", "ÿ")]
    printable = [b for lo, hi in ranges for b in range(ord(lo), ord(hi) + 1)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table.values():
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _component_types(node: Any) -> list[str]:
    """Every `type` in a tokenizer.json component, with Sequence members flattened."""
    if not isinstance(node, dict):
        return []
    types = [node.get("type", "")]
    for key in ("pretokenizers", "decoders", "normalizers"):
        for child in node.get(key) or []:
            types += _component_types(child)
    return types


def _component(component: Any) -> dict | None:
    """One component of a `tokenizers.Tokenizer` (its pre-tokenizer, decoder ...) as its tokenizer.json
    entry. Read on its own: the whole tokenizer's JSON holds the vocabulary (Gemma 3's: 12 MB, 1.8 s to
    write and parse)."""
    return None if component is None else json.loads(component.__getstate__())


@lru_cache(maxsize=16)
def piece_style(tokenizer: Any) -> str:
    """How `tokenizer` writes its pieces: BYTE_LEVEL, SENTENCEPIECE, WORDPIECE or PLAIN."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: judge by its vocabulary
        vocab = tokenizer.get_vocab()
        if any(p.startswith("▁") for p in list(vocab)[:2000]):
            return SENTENCEPIECE
        return WORDPIECE if any(p.startswith("##") for p in vocab) else PLAIN
    decoder = _component(backend.decoder)
    types = _component_types(_component(backend.pre_tokenizer)) + _component_types(decoder)
    if "ByteLevel" in types:
        return BYTE_LEVEL
    if "Metaspace" in types or "▁" in json.dumps(decoder or {}, ensure_ascii=False):
        return SENTENCEPIECE
    if "WordPiece" in types or type(backend.model).__name__ == "WordPiece":
        return WORDPIECE
    return PLAIN


def readable(piece: str, style: str) -> str:
    """One stored piece as text with visible whitespace."""
    if style == BYTE_LEVEL:
        table = _byte_level_table()
        if all(ch in table for ch in piece):
            piece = bytes(table[ch] for ch in piece).decode("utf-8", errors="backslashreplace")
    elif style == SENTENCEPIECE:
        piece = piece.replace("▁", " ")
        if _BYTE_TOKEN.fullmatch(piece):
            raw = bytes([int(_BYTE_TOKEN.fullmatch(piece).group(1), 16)])
            piece = raw.decode("utf-8", errors="backslashreplace")
    return piece.translate(VISIBLE)


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The readable text of each id, in order (special tokens keep their names, e.g. `<bos>`)."""
    style = piece_style(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return [readable(p if p is not None else f"<id {i}>", style) for p, i in zip(pieces, ids)]


def token_bytes(tokenizer: Any, ids: Sequence[int]) -> list[bytes | None]:
    """The bytes of text each id stands for, where the tokenizer stores pieces as bytes (byte-level BPE, and
    SentencePiece's byte fallback `<0xNN>`); None for the others (text pieces, special tokens)."""
    style = piece_style(tokenizer)
    special = set(tokenizer.all_special_ids)
    table = _byte_level_table() if style == BYTE_LEVEL else {}
    out: list[bytes | None] = []
    for i, piece in zip(ids, tokenizer.convert_ids_to_tokens([int(i) for i in ids])):
        if piece is None or int(i) in special:
            out.append(None)
        elif style == BYTE_LEVEL and all(ch in table for ch in piece):
            out.append(bytes(table[ch] for ch in piece))
        elif style == SENTENCEPIECE and _BYTE_TOKEN.fullmatch(piece):
            out.append(bytes([int(_BYTE_TOKEN.fullmatch(piece).group(1), 16)]))
        else:
            out.append(None)
    return out


def split_characters(pieces: Sequence[bytes | None]) -> dict[int, tuple[int, str]]:
    """Runs of tokens that hold the bytes of characters split between them (a Hebrew letter's two bytes
    in two byte-level tokens): {first token: (the token after the run, the run's text)}. A run starts at a
    token whose bytes end inside a character and ends where the bytes gathered decode; a run that never
    completes (text cut mid-character) is left out."""
    runs: dict[int, tuple[int, str]] = {}
    start, gathered = None, b""
    for i, b in enumerate(pieces):
        if b is None:
            start, gathered = None, b""
            continue
        if start is None:
            try:
                b.decode("utf-8")
                continue  # whole characters on its own
            except UnicodeDecodeError:
                start, gathered = i, b""
        gathered += b
        try:
            text = gathered.decode("utf-8")
        except UnicodeDecodeError:
            continue
        runs[start] = (i + 1, text.translate(VISIBLE))
        start, gathered = None, b""
    return runs


def special_flags(tokenizer: Any, ids: Sequence[int]) -> list[bool]:
    """True where the id is one of the tokenizer's special tokens (BOS, EOS, CLS, SEP, PAD ...)."""
    special = set(tokenizer.all_special_ids)
    return [int(i) in special for i in ids]
