"""Finding heads by what they do: a score per head for an attention pattern, measured on a probe that shows
the pattern (a sequence of random tokens, repeated: an induction head finds, for each token of the second
copy, the token that followed it in the first copy).

Scores are attention weights averaged over the queries where the pattern says something:

    previous   a[q, q-1]                      (queries 1 ... n-1)
    first      a[q, 0]                        (every query: the attention sink)
    duplicate  Σ a[q, j] over j < q with ids[j] = ids[q]       (queries whose token came before)
    induction  Σ a[q, j+1] over j + 1 < q with ids[j] = ids[q] (queries whose token came before)
    pattern    Σ a[q, k] · P[q, k] for a 0/1 pattern P the user gives (rows of P that hold a 1), on any
               text (`on_text`): drawn on the Attention page, or written as "q:k,k;q:k" (`parse_cells`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

DETECTORS = {
    "induction": "Induction: from a token, attends to the token that followed its earlier copy",
    "previous": "Previous token: attends to the token just before",
    "duplicate": "Duplicate token: attends to earlier copies of its own token",
    "first": "First token: attends to the first position (the attention sink)",
}
DEFAULT_LENGTH = 50  # random tokens, repeated once: 100 positions (plus a start token)


RULES = {  # patterns a drawn pattern can start from: the detectors' and two more
    **{k: v.split(":")[0] for k, v in DETECTORS.items()},
    "self": "Itself",
    "two back": "Two tokens back",
}


def rule(kind: str, ids: list[int] | tuple[int, ...]) -> np.ndarray:
    """The 0/1 pattern [q, k] of `kind` (a key of RULES) for a sequence `ids`."""
    n = len(ids)
    ids = np.asarray(ids)
    q = np.arange(n)
    want = np.zeros((n, n), dtype=bool)
    if kind in ("previous", "two back"):
        back = 1 if kind == "previous" else 2
        want[q[back:], q[back:] - back] = True
    elif kind == "first":
        want[:, 0] = True
    elif kind == "self":
        want[q, q] = True
    elif kind in ("duplicate", "induction"):
        same = (ids[:, None] == ids[None, :]) & np.tri(n, k=-1, dtype=bool)  # [q, j]: an earlier copy
        if kind == "induction":  # the key after each earlier copy, still before the query
            want[:, 1:] = same[:, :-1]
            want &= np.tri(n, k=-1, dtype=bool)
        else:
            want = same
    else:
        raise KeyError(f"Unknown pattern {kind!r}; known: {', '.join(RULES)}")
    return want


def scores(maps: np.ndarray, ids: list[int] | tuple[int, ...], kind: str, pattern: np.ndarray | None = None):
    """[layer, head] scores of `kind` for maps [layer, head, q, k] of a sequence `ids` (queries and keys
    the same positions). `pattern` [q, k] is the user's 0/1 pattern for kind 'pattern' (any maps' shape:
    cross-attention's too)."""
    if kind == "pattern":
        if pattern is None or pattern.shape != maps.shape[-2:]:
            raise ValueError(f"a pattern of {maps.shape[-2]} x {maps.shape[-1]} is needed")
        return _masked_mean(maps, pattern.astype(bool))
    n = maps.shape[-1]
    if maps.shape[-2] != n or len(ids) != n:
        raise ValueError(f"maps of {maps.shape[-2]} x {n} positions for {len(ids)} tokens")
    if kind not in DETECTORS:
        raise KeyError(f"Unknown detector {kind!r}; known: {', '.join(DETECTORS)}, pattern")
    return _masked_mean(maps, rule(kind, ids))


def parse_cells(text: str, shape: tuple[int, int]) -> np.ndarray:
    """A 0/1 pattern of `shape` from "q:k,k;q:k" (each query with the keys it should attend to);
    InputError for text that is not that, or positions outside the shape."""
    want = np.zeros(shape, dtype=bool)
    for item in filter(None, (part.strip() for part in (text or "").split(";"))):
        query, _, keys = item.partition(":")
        try:
            q, ks = int(query), [int(k) for k in keys.split(",") if k.strip()]
        except ValueError:
            raise InputError(
                f"{item!r} is not a query and its keys: write them as 'query:key,key', e.g. '3:1,2'."
            ) from None
        if not (0 <= q < shape[0]) or any(not (0 <= k < shape[1]) for k in ks):
            raise InputError(f"{item!r} names a position outside the {shape[0]} x {shape[1]} tokens.")
        want[q, ks] = True
    return want


def format_cells(pattern: np.ndarray) -> str:
    """The text parse_cells reads back."""
    rows = [
        f"{q}:{','.join(str(k) for k in np.flatnonzero(row))}" for q, row in enumerate(pattern) if row.any()
    ]
    return ";".join(rows)


def _masked_mean(maps: np.ndarray, want: np.ndarray) -> np.ndarray:
    rows = want.any(-1)
    if not rows.any():
        raise InputError("The probe has no position where this pattern applies.")
    return (maps * want).sum(-1)[..., rows].mean(-1)


def probe(loaded: LoadedModel, seed: int = 0, length: int = DEFAULT_LENGTH) -> list[int]:
    """`length` random tokens (no special tokens) drawn with `seed`, then the same tokens again, after the
    tokenizer's start token when it adds one; shortened to fit the model's context."""
    tokenizer = loaded.tokenizer
    limit = hooked.context_limit(loaded.model)
    if limit is not None:
        length = min(length, (limit - 1) // 2)
    if length < 2:
        raise InputError("The probe needs at least 2 random tokens (twice).")
    special = set(tokenizer.all_special_ids)
    vocab = loaded.card.vocab_size
    rng = np.random.default_rng(seed)
    pool = np.array([i for i in range(min(vocab, len(tokenizer))) if i not in special])
    random = rng.choice(pool, size=length, replace=len(pool) < length).tolist()
    start = tokenizer("a")["input_ids"][:1]
    bos = start if start and start[0] in special else []
    return bos + random + random


@dataclass(frozen=True)
class Detection:
    kind: str
    stack: str  # the self-attention scored (a decoder's, an encoder's)
    ids: tuple[int, ...]  # what that stack read
    tokens: tuple[str, ...]
    scores: np.ndarray  # [layer, head]
    maps: np.ndarray  # [layer, head, q, k] on the probe, to open a head

    def ranked(self) -> list[dict]:
        """One row per head, {"layer", "head", "score"}, highest score first."""
        rows = [{"layer": int(l_), "head": int(h), "score": float(self.scores[l_, h])}
                for l_, h in np.ndindex(*self.scores.shape)]  # fmt: skip
        return sorted(rows, key=lambda r: -r["score"])

    @property
    def nbytes(self) -> int:
        return self.maps.nbytes + self.scores.nbytes


def detect(
    loaded: LoadedModel, kind: str, seed: int = 0, length: int = DEFAULT_LENGTH, stack: str | None = None
) -> Detection:
    """Scores every head of `stack` (default: the stack that predicts; an encoder's for encoders) for
    `kind` on the probe. Encoder-decoders read the probe in both stacks; the decoder reads it shifted right
    behind its start token, and is scored on what it read."""
    if kind not in DETECTORS:
        raise InputError(f"Unknown detector {kind!r}; known: {', '.join(DETECTORS)}.")
    model = loaded.model
    a = anatomy.of(model)
    stack = stack or a.output_stack
    if stack not in a.stacks:
        raise InputError(f"This model has no {stack} stack; it has {', '.join(a.stacks)}.")
    ids = probe(loaded, seed, length)
    inputs = hooked.inputs(model, ids)
    out = hooked.run(loaded, inputs, output_attentions=True, **hooked.options(model, last_logits_only=True))
    if len(a.stacks) > 1:
        found = out.encoder_attentions if stack == "encoder" else out.decoder_attentions
        read = ids if stack == "encoder" else inputs["decoder_input_ids"][0].tolist()
    else:
        found, read = out.attentions, ids
    if not found:
        raise InputError("The model returned no attention weights: it needs eager attention.")
    maps = torch.stack([m[0].float().cpu() for m in found]).numpy()  # [layer, head, q, k]
    return Detection(kind, stack, tuple(read), tuple(display_tokens(loaded.tokenizer, read)),
                     scores(maps, read, kind), maps)  # fmt: skip


def on_text(
    loaded: LoadedModel, text: str, pattern: str, stack: str | None = None, prefix: str = ""
) -> Detection:
    """Every head of `stack`'s self-attention scored for the user's pattern ("q:k,k;q:k" over the
    positions that stack reads) on `text` (encoder-decoders: the decoder reads `prefix`)."""
    model = loaded.model
    a = anatomy.of(model)
    stack = stack or a.output_stack
    if stack not in a.stacks:
        raise InputError(f"This model has no {stack} stack; it has {', '.join(a.stacks)}.")
    ids = hooked.encode(model, loaded.tokenizer, text)
    dec = hooked.decoder_prefix(model, loaded.tokenizer, prefix) if len(a.stacks) > 1 else None
    out = hooked.run(loaded, hooked.inputs(model, ids, dec), output_attentions=True,
                     **hooked.options(model, last_logits_only=True))  # fmt: skip
    if len(a.stacks) > 1:
        found = out.encoder_attentions if stack == "encoder" else out.decoder_attentions
        read = ids if stack == "encoder" else dec
    else:
        found, read = out.attentions, ids
    if not found:
        raise InputError("The model returned no attention weights: it needs eager attention.")
    maps = torch.stack([m[0].float().cpu() for m in found]).numpy()
    want = parse_cells(pattern, maps.shape[-2:])
    if a.stacks[stack].causal and (want & ~np.tri(len(read), dtype=bool)).any():
        raise InputError("The pattern asks a query for a later key, which a causal stack cannot attend to.")
    return Detection("pattern", stack, tuple(read), tuple(display_tokens(loaded.tokenizer, read)),
                     scores(maps, read, "pattern", want), maps)  # fmt: skip
