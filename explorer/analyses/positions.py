"""How transformers know where a token is: the sinusoidal table of "Attention Is All You Need", and the
loaded model's own scheme (learned position vectors, rotary frequencies, or T5's relative buckets),
read from its weights and config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explorer.analyses import scratch
from explorer.models import anatomy

LEARNED, ROTARY, RELATIVE = "learned", "rotary", "relative"
# Where a learned table of position vectors sits, from the base model; `offset` on the module, or the
# embeddings' `padding_idx` + 1 (RoBERTa counts positions from there), is the row of position 0.
TABLES = (
    "wpe", "embeddings.position_embeddings", "embed_positions", "encoder.embed_positions",
    "decoder.embed_positions",
)  # fmt: skip
NOT_DRAWN = {
    "alibi": "This model adds no position vectors: with ALiBi, each head subtracts from its scores a fixed "
    "slope times the query–key distance (the bias step on the Attention from scratch page).",
    "sinusoidal": "This model adds the fixed sinusoidal table above (not learned) to its token embeddings.",
    "none": "This model has no position signal of its own: only its causal mask tells order.",
}


def sinusoidal(n_pos: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """(pos, d_model): PE[pos, 2i] = sin(pos / base^(2i/d)), PE[pos, 2i+1] = cos(pos / base^(2i/d))."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angle = pos / base ** (i / d_model)  # (pos, d_model / 2)
    table = np.zeros((n_pos, d_model))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return table.astype(np.float32)


def scheme(model: Any) -> str:
    """LEARNED, ROTARY or RELATIVE; anatomy.UnsupportedModel saying what the model does otherwise."""
    position = anatomy.of(model).position
    if position == "rope":
        return ROTARY
    if position in (LEARNED, RELATIVE):
        return position
    raise anatomy.UnsupportedModel(
        NOT_DRAWN.get(position, f"This model's positions ({position}) are not drawn here.")
    )


def learned_table(model: Any) -> tuple[np.ndarray, int]:
    """The learned position vectors (pos, d_model) the model adds to its token embeddings, and the row
    where position 0 sits (BART keeps 2 rows before it; RoBERTa counts from padding_idx + 1)."""
    base = getattr(model, "base_model", model)
    for path in TABLES:
        holder, emb = None, base
        for name in path.split("."):
            holder, emb = emb, getattr(emb, name, None)
        if emb is not None and getattr(emb, "weight", None) is not None:
            break
    else:
        raise anatomy.UnsupportedModel(f"Could not find the position table of {type(model).__name__}.")
    padding = getattr(holder, "padding_idx", None)
    offset = getattr(emb, "offset", None) or (padding + 1 if isinstance(padding, int) else 0)
    table = emb.weight.detach().float().cpu().numpy()
    return table[offset:], offset


def cosine_similarity(table: np.ndarray) -> np.ndarray:
    """(pos, pos) cosine similarity between the rows of `table`."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    return (unit @ unit.T).astype(np.float32)


@dataclass(frozen=True)
class Rotary:
    name: str  # "all layers", or a Gemma layer type ("sliding_attention")
    theta: float | None  # rope theta (base) from the config
    rope_type: str
    inv_freq: np.ndarray  # (d_head / 2,) theta_i, as the model's rotary module holds them
    attention_scaling: float
    layers: tuple[int, ...]


def rotary_sets(model: Any) -> list[Rotary]:
    """The rotary frequencies per layer type (one set for Llama, two for Gemma 3: local and global)."""
    config = model.config
    params = getattr(config, "rope_parameters", None) or {}
    rot = scratch.rotary_module(model)
    one_set = hasattr(rot, "inv_freq") or hasattr(rot, "embed_positions")
    types = None if one_set else getattr(config, "layer_types", None)
    n_layers = anatomy.of(model).n_layers(next(iter(anatomy.of(model).stacks)))
    if not types:
        inv, scale = scratch.rotary_frequencies(model, 0)
        theta = params.get("rope_theta", getattr(config, "rope_theta", None))
        kind = params.get("rope_type", "default")
        return [Rotary("all layers", theta, kind, inv.numpy(), scale, tuple(range(n_layers)))]
    sets = []
    for layer_type in sorted(set(types)):
        first = types.index(layer_type)
        inv, scale = scratch.rotary_frequencies(model, first)
        p = params.get(layer_type) or {}
        layers = tuple(i for i, t in enumerate(types) if t == layer_type)
        sets.append(
            Rotary(layer_type, p.get("rope_theta"), p.get("rope_type", "default"), inv.numpy(), scale, layers)
        )
    return sets


def rotary_decay(inv_freq: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """For a query and key that are the same vector, with equal weight in every rotated pair: their dot
    product after rotary at relative distance m, divided by its value at m = 0: mean_i cos(m theta_i)."""
    return np.cos(
        np.asarray(distances, dtype=np.float64)[:, None] * inv_freq[None, :].astype(np.float64)
    ).mean(1)


def wavelengths(inv_freq: np.ndarray) -> np.ndarray:
    """Tokens per full turn of each rotated pair: 2 pi / theta_i."""
    return (2 * np.pi / inv_freq.astype(np.float64)).astype(np.float64)


@dataclass(frozen=True)
class RelativeBias:
    stack: str
    distances: np.ndarray  # (n,) key - query, from -max to +max
    buckets: np.ndarray  # (n,) bucket index of each distance
    bias: np.ndarray  # (head, n) the learned bias per head for each distance
    n_buckets: int
    max_distance: int


def t5_relative(model: Any, stack: str, reach: int = 160) -> RelativeBias:
    """T5's bucket of each relative distance in [-reach, reach] and the learned bias per head, read from
    the first block of `stack` (every layer of the stack uses that one table)."""
    first = scratch.relative_table(model, stack)
    rel = torch.arange(-reach, reach + 1)
    buckets = scratch.relative_buckets(
        rel, not anatomy.of(model).stacks[stack].causal, first.relative_attention_num_buckets,
        first.relative_attention_max_distance,
    )  # fmt: skip
    table = first.relative_attention_bias.weight.detach().float().cpu()  # (bucket, head)
    return RelativeBias(
        stack=stack, distances=rel.numpy(), buckets=buckets.numpy(), bias=table[buckets].T.numpy(),
        n_buckets=first.relative_attention_num_buckets, max_distance=first.relative_attention_max_distance,
    )  # fmt: skip
