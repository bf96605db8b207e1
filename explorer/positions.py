"""How transformers know where a token is: the sinusoidal table of "Attention Is All You Need", and the
loaded model's own scheme (learned position vectors, rotary frequencies, or T5's relative buckets),
read from its weights and config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explorer import blocks, scratch

LEARNED, ROTARY, RELATIVE = "learned", "rotary", "relative"


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
    kind = blocks.style(model)
    if kind in ("llama", "gemma3"):
        return ROTARY
    return RELATIVE if kind == "t5" else LEARNED


def learned_table(model: Any) -> tuple[np.ndarray, int]:
    """The learned position vectors (pos, d_model) the model adds to its token embeddings, and the row
    where position 0 sits (BART keeps 2 rows before it; RoBERTa counts from padding_idx + 1)."""
    kind, base = blocks.style(model), blocks._base(model)
    if kind == "gpt2":
        weight, offset = base.wpe.weight, 0
    elif kind == "bart":
        emb = base.encoder.embed_positions
        weight, offset = emb.weight, getattr(emb, "offset", 2)
    else:
        emb = base.embeddings.position_embeddings
        weight = emb.weight
        offset = (model.config.pad_token_id + 1) if model.config.model_type == "roberta" else 0
    table = weight.detach().float().cpu().numpy()
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
    types = getattr(config, "layer_types", None) if blocks.style(model) == "gemma3" else None
    n_layers = config.num_hidden_layers
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
    first = blocks.layers(model, stack)[0].layer[0].SelfAttention
    rel = torch.arange(-reach, reach + 1)
    buckets = scratch.relative_buckets(
        rel, stack == "encoder", first.relative_attention_num_buckets, first.relative_attention_max_distance
    )
    table = first.relative_attention_bias.weight.detach().float().cpu()  # (bucket, head)
    return RelativeBias(
        stack=stack, distances=rel.numpy(), buckets=buckets.numpy(), bias=table[buckets].T.numpy(),
        n_buckets=first.relative_attention_num_buckets, max_distance=first.relative_attention_max_distance,
    )  # fmt: skip
