"""Two models on one text: their next-token guesses side by side, matched by the text of the token
(their vocabularies differ, so ids mean nothing across them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from explorer.analyses.tokens import display_tokens


@dataclass(frozen=True)
class Guess:
    text: str  # the decoded token, as it would be written
    token: str  # readable (spaces as ␣)
    prob_a: float | None  # None: the text is not one token of that model
    prob_b: float | None


def _probs(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _prob_of(tokenizer: Any, probs: np.ndarray, text: str) -> float | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return float(probs[ids[0]]) if len(ids) == 1 and ids[0] < len(probs) else None


def next_tokens(a: Any, logits_a: np.ndarray, b: Any, logits_b: np.ndarray, k: int = 10) -> list[Guess]:
    """The union of both models' k likeliest next tokens (a's first), each with its probability under
    both models: a token text that is one token of the other model gets that token's probability, one
    that the other model splits into several tokens gets None."""
    pa, pb = _probs(logits_a), _probs(logits_b)
    rows: dict[str, Guess] = {}
    for model, probs in ((a, pa), (b, pb)):
        tok = model.tokenizer
        order = [int(i) for i in np.argsort(-probs)[:k]]
        for i, shown in zip(order, display_tokens(tok, order)):
            text = tok.decode([i])
            if text in rows or not text:
                continue
            this = float(probs[i])
            if model is a:
                rows[text] = Guess(text, shown, this, _prob_of(b.tokenizer, pb, text))
            else:
                rows[text] = Guess(text, shown, _prob_of(a.tokenizer, pa, text), this)
    return list(rows.values())
