"""What a lesson shows of the loaded model on the workspace's text: sentences with its numbers, figures, a
table, and the question whose answer it computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from explorer.lessons.questions import Question
from explorer.runs.capture import AttentionSet, Capture, Sequence


@dataclass(frozen=True)
class Live:
    facts: tuple[str, ...]  # Markdown sentences about this model and text (token strings escaped)
    question: Question
    figures: tuple[Any, ...] = ()  # plotly Figures
    table: dict[str, list] | None = None  # column -> values
    tokens: Sequence | None = None  # shown as token chips
    latex: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # Markdown, shown under the figures
    offers: tuple[str, ...] = ()  # embedded models worth switching to from here, to compare


def label(i: int, token: str) -> str:
    """A token named by its position, so that two equal tokens stay two options."""
    return f"{i}: {token}"


def reading_set(cap: Capture) -> AttentionSet:
    """The self-attention a lesson reads: the model's own, or an encoder-decoder's encoder."""
    return cap.attention_sets()[0]


def causal_set(cap: Capture) -> AttentionSet:
    """The masked self-attention when the model has one (a decoder's, an encoder-decoder's decoder),
    else the encoder's."""
    sets = cap.attention_sets()
    return next((s for s in sets if s.causal), sets[0])


def source_tokens(cap: Capture) -> Sequence:
    """The tokens the model read from the text (an encoder-decoder's source)."""
    return cap.source if cap.source is not None else cap.sequence
