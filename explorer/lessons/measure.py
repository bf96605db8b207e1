"""Measurements the lessons make live on the loaded model: generation with and without the KV cache, and
how attention's cost grows with the length of the text."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache, EncoderDecoderCache

from explorer.models import anatomy
from explorer.models.anatomy import input_device
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel


CORE_LENGTHS = (256, 512, 1024, 2048)  # where the n² step is timed alone


def cache_numbers(cache) -> int:
    """How many numbers a transformers cache holds: every layer's keys and values."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel()
    return total


@dataclass(frozen=True)
class CacheCost:
    """Greedy generation of `len(tokens)` tokens twice: with the KV cache (one position per step) and
    without (the whole sequence again at every step)."""

    prompt_len: int  # positions read before the first new token (encoder-decoders: the source)
    tokens: tuple[int, ...]  # the greedy tokens (the same both ways, else `agree` is False)
    agree: bool
    cached: tuple[float, ...]  # seconds per step, with the cache (step 0: reading the prompt)
    full: tuple[float, ...]  # seconds per step, without
    numbers: int  # numbers the cache holds after the prompt (encoder-decoders: the cross-attention cache)
    layers: int
    kv_heads: int
    d_head: int


def _steps_cached(model, ids, source, steps: int) -> tuple[list[int], list[float], int]:
    device = input_device(model)
    times, out_ids = [], []
    t = time.perf_counter()
    if source is not None:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        enc = model.get_encoder()(input_ids=torch.tensor([source], device=device))
        out = model(encoder_outputs=enc, decoder_input_ids=torch.tensor([ids], device=device), cache=cache,
                    use_cache=True)  # fmt: skip
    else:
        cache = DynamicCache(config=model.config)
        enc = None
        out = model(
            input_ids=torch.tensor([ids], device=device), cache=cache, use_cache=True, logits_to_keep=1
        )
    cache = out.cache
    held = cache_numbers(cache.cross_attention_cache if source is not None else cache)
    for _ in range(steps):
        nxt = int(out.logits[0, -1].argmax())
        times.append(time.perf_counter() - t)
        out_ids.append(nxt)
        t = time.perf_counter()
        x = torch.tensor([[nxt]], device=device)
        if source is not None:
            out = model(encoder_outputs=enc, decoder_input_ids=x, cache=cache, use_cache=True)
        else:
            out = model(input_ids=x, cache=cache, use_cache=True)
        cache = out.cache
    return out_ids, times, held


def _steps_full(model, ids, source, steps: int) -> tuple[list[int], list[float]]:
    device = input_device(model)
    times, out_ids, seq = [], [], list(ids)
    for _ in range(steps):
        t = time.perf_counter()
        if source is not None:
            out = model(input_ids=torch.tensor([source], device=device),
                        decoder_input_ids=torch.tensor([seq], device=device), use_cache=False)  # fmt: skip
        else:
            out = model(input_ids=torch.tensor([seq], device=device), use_cache=False, logits_to_keep=1)
        nxt = int(out.logits[0, -1].argmax())
        times.append(time.perf_counter() - t)
        out_ids.append(nxt)
        seq.append(nxt)
    return out_ids, times


def cache_cost(loaded: LoadedModel, text: str, steps: int = 12) -> CacheCost:
    """Generates `steps` tokens after `text` greedily, with and without the cache, timing each step, in
    the model's turn. InputError for an empty or too long text."""
    model = loaded.model
    ids = hooked.encode(model, loaded.tokenizer, text, limit=(hooked.context_limit(model) or 10**9) - steps)
    a = anatomy.of(model)
    source = ids if getattr(model.config, "is_encoder_decoder", False) else None
    start = [hooked.decoder_start(model)] if source is not None else ids
    att = a.attention("cross" if source is not None else a.output_stack, 0)
    with loaded.lock, torch.no_grad():
        cached_ids, cached, held = _steps_cached(model, start, source, steps)
        full_ids, full = _steps_full(model, start, source, steps)
    return CacheCost(
        prompt_len=len(ids), tokens=tuple(cached_ids), agree=cached_ids == full_ids, cached=tuple(cached),
        full=tuple(full), numbers=held, layers=a.n_layers(a.output_stack), kv_heads=att.n_kv_heads,
        d_head=att.d_head,
    )  # fmt: skip


@dataclass(frozen=True)
class Growth:
    """One forward pass at each length, the time spent inside the attention modules and in all."""

    lengths: tuple[int, ...]
    attention: tuple[float, ...]  # seconds inside every attention module, summed
    total: tuple[float, ...]  # seconds of the whole forward pass
    weights: tuple[int, ...]  # attention weights computed: layers x heads x n², every kind of attention


def growth(loaded: LoadedModel, text: str, lengths: tuple[int, ...] = (32, 64, 128, 256)) -> Growth:
    """Times one forward pass of the text's tokens repeated to each length (within the context), and
    the share of it inside the attention modules, measured by hooks around them."""
    model = loaded.model
    a = anatomy.of(model)
    ids = hooked.encode(model, loaded.tokenizer, text)
    limit = hooked.context_limit(model) or max(lengths)
    lengths = tuple(n for n in lengths if n <= limit) or (min(limit, len(ids)),)
    layers = {kind: a.n_layers("decoder" if kind == "cross" else kind) for kind in a.attention_kinds}
    found = [a.attention(kind, i).module for kind, n in layers.items() for i in range(n)]
    modules = list({id(m): m for m in found}.values())  # a block shared by every layer (ALBERT) once
    spent = [0.0]
    started: dict[int, float] = {}

    def pre(key: int):
        def fn(x: torch.Tensor) -> None:
            started[key] = time.perf_counter()

        return fn

    def post(key: int):
        def fn(x: torch.Tensor) -> None:
            spent[0] += time.perf_counter() - started.pop(key)

        return fn

    hooks = [hooked.Hook(m, "pre", pre(i)) for i, m in enumerate(modules)]
    hooks += [hooked.Hook(m, "post", post(i)) for i, m in enumerate(modules)]
    attn_t, total_t, weights = [], [], []
    heads = sum(a.attention(kind, 0).n_heads * n for kind, n in layers.items())
    for i, n in enumerate(lengths):
        seq = (ids * (n // max(len(ids), 1) + 1))[:n]
        inputs = hooked.inputs(model, seq)
        if i == 0:  # a first pass pays for allocations the later ones reuse
            hooked.run(loaded, inputs, (), **hooked.options(model, last_logits_only=True))
        spent[0] = 0.0
        t = time.perf_counter()
        hooked.run(loaded, inputs, hooks, **hooked.options(model, last_logits_only=True))
        total_t.append(time.perf_counter() - t)
        attn_t.append(spent[0])
        weights.append(heads * n * n)
    return Growth(tuple(lengths), tuple(attn_t), tuple(total_t), tuple(weights))


def core_times(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool,
    lengths: tuple[int, ...] = CORE_LENGTHS,
) -> tuple[float, ...]:
    """Seconds of the step that compares every query with every key, softmax(Q Kᵀ · scale [+ mask]) V, for
    all heads of one layer at each length: q (head, pos, d_head), k and v (kv_head, pos, d_head), a
    layer's own vectors repeated to the length (best of two runs)."""
    rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)  # each query head's key/value head
    times = []
    with torch.no_grad():
        for n in lengths:
            tile = -(-n // q.shape[1])  # ceil
            qn, kn, vn = (t.repeat(1, tile, 1)[:, :n].contiguous() for t in (q, k, v))
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                s = qn @ kn.transpose(-1, -2) * scale  # (head, n, n)
                if causal:
                    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
                _ = s.softmax(-1) @ vn
                best = min(best, time.perf_counter() - t)
            times.append(best)
    return tuple(times)
