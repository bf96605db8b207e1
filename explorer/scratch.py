"""Attention computed from scratch: from a layer's input and its weights to each head's attention map,
step by step, then checked against the map the model itself returned.

One forward pass (`capture`) records, with forward pre-hooks on every self-attention module, the input
each one received (the layer input after its norm), and the model's own attention maps
(`output_attentions=True`, eager attention). `heads_from_scratch` then recomputes every head of a layer
with plain tensor algebra from the module's weights:

    X (pos, d_model) -> Q = X W_Q + b_Q (head, pos, d_head), K, V (kv_head, pos, d_head)
    [Gemma 3: RMS-normalize each q and k vector] -> [rotary models: rotate q and k by position]
    -> S = Q K^T (head, q, k) -> S * scale [+ T5's relative position bias] [softcap]
    -> mask (causal, sliding window, padding) -> A = softmax(S) -> O = A V (head, q, d_head)

Only the rotary inverse frequencies are read from the model's rotary module (its `inv_freq` buffer, which
holds the model's rope theta and scaling); cosines, sines and the rotation are computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explorer import blocks
from explorer.tokens import display_tokens

FLOAT32_TOLERANCE = 1e-5
# A float16 / bfloat16 model rounds every step (scores of size ~10 included) to 11 / 8 significant bits,
# while this computation stays in float32: allow 8 units in the last place of the model's dtype
# (float16 0.0078, bfloat16 0.0625). Measured on SmolLM2: float16 0.0028, bfloat16 0.017.
HALF_ULPS = 8


@dataclass(frozen=True)
class StackCapture:
    """What one forward pass gave for one kind of attention: a stack's self-attention, or cross."""

    stack: str  # encoder | decoder (self-attention) | cross (decoder queries, encoder keys)
    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # readable pieces (explorer.tokens)
    inputs: tuple[torch.Tensor | None, ...]  # per layer: (pos, d_model), the attention input after its norm
    attentions: tuple[torch.Tensor | None, ...]  # per layer: (head, q, k), the model's own maps
    dtype: torch.dtype  # the model's compute dtype
    kv_inputs: tuple[torch.Tensor | None, ...] | None = None  # cross: per layer (src, d_model) encoder output
    key_tokens: tuple[str, ...] | None = None  # cross: the encoder's tokens (keys); else the same as tokens

    @property
    def n_layers(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class HeadsMath:
    """Every intermediate of one layer's self-attention, all heads, float32 on the CPU."""

    x: torch.Tensor  # (pos, d_model) layer input after its norm
    q: torch.Tensor  # (head, pos, d_head) X W_Q + b_Q
    k: torch.Tensor  # (kv_head, pos, d_head)
    v: torch.Tensor  # (kv_head, pos, d_head)
    q_normed: torch.Tensor | None  # (head, pos, d_head) after q_norm (Gemma 3)
    k_normed: torch.Tensor | None  # (kv_head, pos, d_head)
    cos: torch.Tensor | None  # (pos, d_head) rotary cos(m theta_i), i repeated over both halves
    sin: torch.Tensor | None
    q_rot: torch.Tensor | None  # (head, pos, d_head) after the rotation
    k_rot: torch.Tensor | None  # (kv_head, pos, d_head)
    scores: torch.Tensor  # (head, q, k) Q K^T
    scale: float
    scale_text: str  # LaTeX of the scale, e.g. 1/\sqrt{64}
    bias: torch.Tensor | None  # (head, q, k) T5's relative position bias
    softcap: float | None
    logits: torch.Tensor  # (head, q, k) scaled (+ bias, softcapped), before the mask
    allowed: torch.Tensor  # (q, k) bool: where a query may look
    window: int | None
    probs: torch.Tensor  # (head, q, k)
    out: torch.Tensor  # (head, q, d_head) A V
    n_rep: int  # query heads per key/value head
    w_shape: tuple[int, int]  # (d_model, d_head) of one head's W_Q
    has_bias: bool


def tolerance(dtype: torch.dtype) -> float:
    if dtype in (torch.float32, torch.float64):
        return FLOAT32_TOLERANCE
    return HALF_ULPS * torch.finfo(dtype).eps


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


def capture(
    loaded: Any, text: str, limit: int | None = None, layer: int | None = None
) -> dict[str, StackCapture]:
    """One forward pass of `text`: per stack, the attention inputs and the model's attention maps.
    `layer` keeps that layer's only (the others are None): a page holding a capture per user keeps
    megabytes, not the hundreds that every map of a long text takes.
    Raises blocks.TextError (empty or too long text) or blocks.UnsupportedModel."""
    model, tokenizer = loaded.model, loaded.tokenizer
    names = blocks.attention_kinds(model)
    ids = blocks.encode(model, tokenizer, text, limit)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def hook_for(stack: str, layer: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            kv = kwargs.get("key_value_states")
            seen[(stack, layer)] = (hidden.detach()[0], None if kv is None else kv.detach()[0])

        return hook

    with loaded.lock:
        try:
            for stack in names:
                for i in range(_n_layers(model, stack)):
                    if layer is not None and i != layer:
                        continue
                    attn = blocks.attention_module(model, stack, i)
                    handles.append(attn.register_forward_pre_hook(hook_for(stack, i), with_kwargs=True))
            with torch.no_grad():
                out = model(
                    **blocks.model_inputs(model, ids, blocks.input_device(model)), output_attentions=True
                )
        finally:
            for handle in handles:
                handle.remove()
    dtype = next(model.parameters()).dtype
    result = {}
    for stack in names:
        if len(names) > 1:
            maps = {
                "encoder": out.encoder_attentions, "decoder": out.decoder_attentions,
                "cross": out.cross_attentions,
            }[stack]  # fmt: skip
            stack_ids = ids if stack == "encoder" else blocks.decoder_input(model, ids)
        else:
            maps, stack_ids = out.attentions, ids
        n = _n_layers(model, stack)
        kept = [layer is None or i == layer for i in range(n)]
        result[stack] = StackCapture(
            stack=stack,
            ids=tuple(stack_ids),
            tokens=tuple(display_tokens(tokenizer, stack_ids)),
            inputs=tuple(seen[(stack, i)][0] if kept[i] else None for i in range(n)),
            attentions=tuple(maps[i][0].detach() if kept[i] else None for i in range(n)),
            dtype=dtype,
            kv_inputs=tuple(seen[(stack, i)][1] if kept[i] else None for i in range(n))
            if stack == "cross"
            else None,
            key_tokens=tuple(display_tokens(tokenizer, ids)) if stack == "cross" else None,
        )
    return result


def _n_layers(model: Any, kind: str) -> int:
    return len(blocks.layers(model, "decoder" if kind == "cross" else kind))


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b for an nn.Linear weight (out, in)."""
    y = x @ weight.float().T
    return y + bias.float() if bias is not None else y


def _heads(y: torch.Tensor, d_head: int) -> torch.Tensor:
    """(pos, n * d_head) -> (n, pos, d_head)."""
    return y.view(y.shape[0], -1, d_head).transpose(0, 1)


def _projections(
    kind: str, m: Any, x: torch.Tensor, kv: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Q (head, pos, d_head), K and V (kv_head, pos, d_head), whether there are biases, d_head.
    Cross-attention: keys and values from `kv` (src, d_model), the encoder's output."""
    if kind == "gpt2":  # Conv1D: weight (d_model, 3 d_model), y = x W + b
        d_head = m.head_dim
        qkv = x @ m.c_attn.weight.float() + m.c_attn.bias.float()
        q, k, v = qkv.split(m.split_size, dim=-1)
        return _heads(q, d_head), _heads(k, d_head), _heads(v, d_head), True, d_head
    if kind == "bert":
        names, d_head = ("query", "key", "value"), m.attention_head_size
    elif kind == "t5":
        names, d_head = ("q", "k", "v"), m.key_value_proj_dim
    else:  # llama, gemma3, bart
        names, d_head = ("q_proj", "k_proj", "v_proj"), m.head_dim
    lins = [getattr(m, n) for n in names]
    src = x if kv is None else kv
    q, k, v = (_heads(_linear(inp, lin.weight, lin.bias), d_head) for inp, lin in zip((x, src, src), lins))
    return q, k, v, lins[0].bias is not None, d_head


def _rms_norm(x: torch.Tensor, norm: Any, gemma: bool) -> torch.Tensor:
    """x / rms(x) * gamma over the last dimension; Gemma stores gamma - 1 (its weight starts at zero)."""
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
    gamma = norm.weight.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * ((1.0 + gamma) if gemma else gamma)


def rotary_frequencies(model: Any, layer: int) -> tuple[torch.Tensor, float]:
    """The inverse frequencies theta_i (d_head / 2,) of the layer's rotary embedding and its attention
    scaling, read from the model's rotary module (Gemma 3 has one set per layer type)."""
    rot = blocks._base(model).rotary_emb
    types = getattr(model.config, "layer_types", None)
    if hasattr(rot, "inv_freq"):
        return rot.inv_freq.float().cpu(), float(getattr(rot, "attention_scaling", 1.0))
    layer_type = types[layer]
    return (
        getattr(rot, f"{layer_type}_inv_freq").float().cpu(),
        float(getattr(rot, f"{layer_type}_attention_scaling", 1.0)),
    )


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, halves convention: pairs (x_i, x_{i + d/2}) turn by angle m theta_i.
    x (n, pos, d_head), cos/sin (pos, d_head)."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


def relative_buckets(
    rel: torch.Tensor, bidirectional: bool, n_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket of each relative position (key - query): half the buckets exact small distances, the
    rest log-spaced up to max_distance; bidirectional stacks give keys after the query their own half."""
    bucket = torch.zeros_like(rel)
    if bidirectional:
        n_buckets //= 2
        bucket = bucket + (rel > 0).long() * n_buckets
        dist = rel.abs()
    else:
        dist = (-rel).clamp(min=0)  # a decoder never looks ahead: only distances into the past count
    exact = n_buckets // 2
    log_part = (
        exact
        + (
            torch.log(dist.float().clamp(min=1) / exact)
            / math.log(max_distance / exact)
            * (n_buckets - exact)
        ).long()
    )
    log_part = log_part.clamp(max=n_buckets - 1)
    return bucket + torch.where(dist < exact, dist, log_part)


def t5_bias(model: Any, stack: str, n_q: int, n_k: int) -> torch.Tensor:
    """(head, q, k) relative position bias of a T5 stack (learned in its first block, shared by all)."""
    first = blocks.layers(model, stack)[0].layer[0].SelfAttention
    rel = torch.arange(n_k)[None, :] - torch.arange(n_q)[:, None]
    buckets = relative_buckets(
        rel, stack == "encoder", first.relative_attention_num_buckets, first.relative_attention_max_distance
    )
    table = first.relative_attention_bias.weight.float().cpu()  # (bucket, head)
    return table[buckets].permute(2, 0, 1)


def sliding_window(model: Any, layer: int, stack: str) -> int | None:
    """The layer's sliding window in tokens, or None for full attention."""
    config, kind = model.config, blocks.style(model)
    window = getattr(config, "sliding_window", None)
    if kind not in ("llama", "gemma3") or not window:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return int(window) if types[layer] == "sliding_attention" else None
    return int(window) if getattr(config, "model_type", "") == "mistral" else None


def allowed_positions(
    n: int, causal: bool, window: int | None, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """(q, k) bool: causal (k <= q), a sliding window (q - k < window; both ways when not causal), and
    padding (`keep` (k,) False at padded keys)."""
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    ok = k <= q if causal else torch.ones(n, n, dtype=torch.bool)
    if window is not None:
        ok = ok & ((q - k) < window if causal else (q - k).abs() < window)
    if keep is not None:
        ok = ok & keep.bool()[None, :]
    return ok


def _scale(kind: str, model: Any, m: Any, layer: int, d_head: int) -> tuple[float, str]:
    config = model.config
    if kind == "t5":
        return 1.0, "1"
    if kind == "gemma3":
        s = config.query_pre_attn_scalar
        return float(s) ** -0.5, rf"1/\sqrt{{{s}}}"
    scale, text = d_head**-0.5, rf"1/\sqrt{{{d_head}}}"
    if kind == "gpt2":
        if not config.scale_attn_weights:
            scale, text = 1.0, "1"
        if config.scale_attn_by_inverse_layer_idx:
            scale, text = scale / (layer + 1), rf"{text} \cdot 1/{layer + 1}"
    return scale, text


def heads_from_scratch(
    model: Any,
    stack: str,
    layer: int,
    x: torch.Tensor,
    keep: torch.Tensor | None = None,
    kv: torch.Tensor | None = None,
) -> HeadsMath:
    """Recomputes every head of `layer` from its input `x` (pos, d_model) and the module's weights.
    `keep` (pos,) marks real tokens (False: padding). Cross-attention (`stack` 'cross'): `kv` (src,
    d_model) is the encoder's output, which keys and values read."""
    kind = blocks.style(model)
    m = blocks.attention_module(model, stack, layer)
    x = x.detach().float()
    kv = None if kv is None else kv.detach().float()
    with torch.no_grad():
        q, k, v, has_bias, d_head = _projections(kind, m, x, kv)
        q_normed = k_normed = cos = sin = q_rot = k_rot = None
        qq, kk = q, k
        if hasattr(m, "q_norm") and hasattr(m, "k_norm"):
            gemma = "Gemma" in type(m.q_norm).__name__
            q_normed, k_normed = _rms_norm(q, m.q_norm, gemma), _rms_norm(k, m.k_norm, gemma)
            qq, kk = q_normed, k_normed
        if kind in ("llama", "gemma3"):
            inv_freq, attention_scaling = rotary_frequencies(model, layer)
            pos = torch.arange(x.shape[0], device=x.device).float()
            angles = pos[:, None] * inv_freq.to(x.device)[None, :]  # (pos, d_head / 2)
            angles = torch.cat((angles, angles), dim=-1)  # (pos, d_head)
            cos, sin = angles.cos() * attention_scaling, angles.sin() * attention_scaling
            q_rot, k_rot = rotate(qq, cos, sin), rotate(kk, cos, sin)
            qq, kk = q_rot, k_rot
        n_rep = q.shape[0] // k.shape[0]
        k_full = kk.repeat_interleave(n_rep, dim=0)  # query head h reads key/value head h // n_rep
        v_full = v.repeat_interleave(n_rep, dim=0)
        scores = qq @ k_full.transpose(-1, -2)  # (head, q, k)
        scale, scale_text = _scale(kind, model, m, layer, d_head)
        logits = scores * scale
        bias = None
        if kind == "t5" and stack != "cross":  # T5's cross-attention has no position bias
            bias = t5_bias(model, stack, x.shape[0], x.shape[0]).to(x.device)
            logits = logits + bias
        softcap = getattr(model.config, "attn_logit_softcapping", None) if kind == "gemma3" else None
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        window = sliding_window(model, layer, stack)
        if stack == "cross":  # every query sees every source token
            allowed = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=x.device)
        else:
            allowed = allowed_positions(x.shape[0], blocks.causal(model, stack), window, keep).to(x.device)
        # The model adds the dtype's lowest value where a query may not look; so does this.
        masked = logits + torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
        probs = torch.softmax(masked, dim=-1)
        out = probs @ v_full
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    return HeadsMath(
        x=x.cpu(), q=q.cpu(), k=k.cpu(), v=v.cpu(), q_normed=cpu(q_normed), k_normed=cpu(k_normed),
        cos=cpu(cos), sin=cpu(sin), q_rot=cpu(q_rot), k_rot=cpu(k_rot), scores=scores.cpu(), scale=scale,
        scale_text=scale_text, bias=cpu(bias), softcap=softcap or None, logits=logits.cpu(),
        allowed=allowed.cpu(), window=window, probs=probs.cpu(), out=out.cpu(), n_rep=n_rep,
        w_shape=(x.shape[1], d_head), has_bias=has_bias,
    )  # fmt: skip


def max_differences(model: Any, cap: StackCapture) -> list[list[float]]:
    """[layer][head]: the largest |from scratch - model| over the attention map of each head."""
    rows = []
    for layer in range(cap.n_layers):
        kv = cap.kv_inputs[layer] if cap.kv_inputs is not None else None
        math_ = heads_from_scratch(model, cap.stack, layer, cap.inputs[layer], kv=kv)
        diff = (math_.probs - cap.attentions[layer].float().cpu()).abs().amax(dim=(-1, -2))
        rows.append([float(d) for d in diff])
    return rows


def verify(loaded: Any, text: str) -> dict:
    """Every layer and head of every stack against the model's own maps, as a JSON-ready dict."""
    caps = capture(loaded, text)
    tol = tolerance(next(iter(caps.values())).dtype)
    result: dict[str, Any] = {"model": loaded.card.name, "tolerance": tol}
    worst = 0.0
    per_stack = {}
    for stack, cap in caps.items():
        rows = max_differences(loaded.model, cap)
        worst = max([worst] + [d for row in rows for d in row])
        per_stack[stack] = rows
    result["n_tokens"] = len(next(iter(caps.values())).ids)
    result["max_abs_diff"] = worst
    if len(per_stack) == 1:
        result["per_layer"] = next(iter(per_stack.values()))
    else:
        result["per_stack"] = per_stack
    result["ok"] = bool(worst <= tol)
    return result


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
