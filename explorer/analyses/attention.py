"""Numbers computed from captured attention maps: head statistics, rollout, token focus, thumbnails.

Pure numpy on arrays shaped `[layer, head, q, k]` (one map per query head); nothing here touches a
model, so a page can recompute any of it from a kept capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATISTICS = {
    "entropy": "Entropy (bits): how spread out each query's attention is, averaged over queries",
    "distance": "Mean attention distance (tokens): Σ_k a[q,k]·|q−k|, averaged over queries",
    "first": "Share on the first token (attention sink), averaged over queries",
    "previous": "Share on the previous token, averaged over queries 1…n−1",
    "self": "Share on itself (the query's own position), averaged over queries",
}
SAME_SEQUENCE_ONLY = {"distance", "previous", "self"}  # cross-attention has no positional relation


def head_statistics(maps: np.ndarray, name: str) -> np.ndarray:
    """One number per head, [layer, head], for the statistic `name` (a key of STATISTICS).

    `maps` is [layer, head, q, k] with rows summing to 1."""
    n_q, n_k = maps.shape[-2:]
    if name == "entropy":
        return _entropy(maps)
    if name == "first":
        return maps[..., :, 0].mean(-1)
    if name in SAME_SEQUENCE_ONLY and n_q != n_k:
        raise ValueError(f"{name!r} needs queries and keys from the same sequence ({n_q} vs {n_k} positions)")
    if name == "distance":
        q, k = np.arange(n_q)[:, None], np.arange(n_k)[None, :]
        return (maps * np.abs(q - k)).sum(-1).mean(-1)
    if name == "previous":
        if n_q < 2:
            return np.zeros(maps.shape[:2], dtype=maps.dtype)
        idx = np.arange(1, n_q)
        return maps[..., idx, idx - 1].mean(-1)
    if name == "self":
        idx = np.arange(n_q)
        return maps[..., idx, idx].mean(-1)
    raise KeyError(f"Unknown statistic {name!r}; known: {', '.join(STATISTICS)}")


def _entropy(maps: np.ndarray) -> np.ndarray:
    """-Σ_k a log2 a (0 log 0 = 0), averaged over queries, [layer, head]: one layer at a time and without
    copies of the maps (a 1,500-token capture of SmolLM2 holds 2.4 GB of them)."""
    out = np.empty(maps.shape[:2], dtype=np.float64)
    for layer in range(maps.shape[0]):
        p = torch.from_numpy(np.ascontiguousarray(maps[layer]))  # [head, q, k], a view when contiguous
        out[layer] = (-torch.special.xlogy(p, p).sum(-1).mean(-1) / np.log(2)).double().numpy()
    return out.astype(maps.dtype)


def uniform_entropy(n_q: int, n_k: int, causal: bool, window: int | None = None) -> float:
    """The entropy statistic's reference: the mean entropy, in bits, of attention spread evenly over the
    keys each query may read. Without a mask that is all n_k keys; under a causal mask query i (the queries
    being the last n_q of the n_k positions) reads the keys up to itself, at most `window` of them under a
    sliding window."""
    if not causal:
        return float(np.log2(n_k))
    seen = np.arange(n_k - n_q + 1, n_k + 1)
    if window:
        seen = np.minimum(seen, window)
    return float(np.log2(seen).mean())


def mean_over_heads(maps: np.ndarray) -> np.ndarray:
    """[layer, head, q, k] -> [layer, q, k]."""
    return maps.mean(axis=1)


def rollout(maps: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar and Zuidema, 2020), [layer, q, k]: entry l is how much each query
    position at layer l draws, through all layers up to l, on each input position.

    Each layer's head-averaged map is mixed with the identity for the residual connection,
    `residual * I + (1 - residual) * A`, rows renormalized, and the layers multiplied in order."""
    mean = mean_over_heads(maps).astype(np.float64)
    n = mean.shape[-1]
    if mean.shape[-2] != n:
        raise ValueError("Rollout needs self-attention (as many queries as keys)")
    eye = np.eye(n)
    out = np.empty_like(mean)
    acc = eye
    for layer, a in enumerate(mean):
        a = residual * eye + (1.0 - residual) * a
        a = a / a.sum(-1, keepdims=True)
        acc = a @ acc
        out[layer] = acc
    return out.astype(np.float32)


def focus(maps: np.ndarray, query: int, key: int) -> np.ndarray:
    """How much position `query` attends to position `key`, per head: [layer, head]."""
    return maps[:, :, query, key]


@dataclass(frozen=True)
class Attended:
    layer: int
    key: int
    weight: float  # mean over heads


def top_attended(maps: np.ndarray, query: int, k: int = 3) -> list[list[Attended]]:
    """For each layer, the `k` positions that `query` attends to most (weights averaged over heads)."""
    mean = maps[:, :, query, :].mean(axis=1)  # [layer, k]
    result = []
    for layer, row in enumerate(mean):
        order = np.argsort(-row, kind="stable")[:k]
        result.append([Attended(layer, int(j), float(row[j])) for j in order])
    return result


def pool_max(a: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Shrinks the last two axes to at most `size` by taking the largest value of each block, so a
    sharp pattern (a diagonal, a sink) survives. Returns the pooled array and the block size."""
    n_q, n_k = a.shape[-2:]
    block = max(1, int(np.ceil(max(n_q, n_k) / size)))
    if block == 1:
        return a, 1
    x = torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, 1, n_q, n_k)
    pooled = torch.nn.functional.max_pool2d(x, kernel_size=block, stride=block, ceil_mode=True)
    return pooled.reshape(*a.shape[:-2], *pooled.shape[-2:]).numpy(), block
