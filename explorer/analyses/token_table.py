"""A text split by a tokenizer, row by row (id, stored piece, readable text, special or not), as coloured
chips in escaped HTML, and the tokenizers of the embedded models loaded on their own (no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from explorer.analyses.tokens import display_tokens, piece_style, special_flags
from explorer.models import devices, zoo

PALETTE = ("#dbeafe", "#dcfce7", "#fef3c7", "#fce7f3", "#e0e7ff", "#ccfbf1", "#fee2e2", "#ede9fe")


@dataclass(frozen=True)
class TokenRow:
    index: int
    id: int
    piece: str  # as the tokenizer stores it (byte-level Ġ, SentencePiece ▁, WordPiece ##)
    text: str  # readable: spaces ␣, newlines ↵, bytes decoded (explorer.analyses.tokens)
    special: bool


def split(tokenizer: Any, text: str) -> list[TokenRow]:
    """`text` as the model would read it, special tokens included."""
    ids = [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    readable = display_tokens(tokenizer, ids)
    special = special_flags(tokenizer, ids)
    return [
        TokenRow(i, t, p if p is not None else "", r, s)
        for i, (t, p, r, s) in enumerate(zip(ids, pieces, readable, special))
    ]


def style_name(tokenizer: Any) -> str:
    return piece_style(tokenizer)


def chips_html(rows: list[TokenRow], limit: int = 2000) -> str:
    """One inline chip per token; every string escaped (tokens are text, never markup). The id and the
    stored piece show on hover."""
    spans = []
    for row in rows[:limit]:
        color = "#e2e8f0" if row.special else PALETTE[row.index % len(PALETTE)]
        border = "1px dashed #64748b" if row.special else "1px solid rgba(0,0,0,0.08)"
        title = escape(f"#{row.index} · id {row.id} · stored as {row.piece!r}", quote=True)
        spans.append(
            f'<span class="tok-chip" title="{title}" style="background:{color};border:{border};'
            "border-radius:4px;padding:1px 3px;margin:1px;display:inline-block;font-family:monospace;"
            f'white-space:pre">{escape(row.text)}</span>'
        )
    more = f"<span> … and {len(rows) - limit:,} more</span>" if len(rows) > limit else ""
    return f'<div class="tok-chips" style="line-height:1.9">{"".join(spans)}{more}</div>'


def embedded_tokenizer(name: str) -> Any:
    """The tokenizer of an embedded model, read from its folder (the converted cache folder for GGUF
    models) without loading its weights."""
    from transformers import AutoTokenizer

    from explorer.models.loading import embedded_weights

    folder = embedded_weights(zoo.entry(name), devices.available_bytes("cpu"), lambda stage, frac: None)
    return AutoTokenizer.from_pretrained(str(folder))
