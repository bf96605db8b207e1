"""Attention computed from scratch: from a layer's input and its weights to each head's attention map,
step by step, then checked against the map the model itself returned.

One hooked run (`capture`) records the input each attention module received (the layer input after its
norm) and the model's own maps (`output_attentions=True`, eager attention). `heads_from_scratch` then
recomputes every head of a layer with plain tensor algebra from what `explorer.models.anatomy` names:

    X (pos, d_model) -> Q = X W_Q + b_Q (head, pos, d_head), K, V (kv_head, pos, d_head)
    [q/k norms: per head, or over the whole projection] -> [rotary: turn q and k by position]
    -> S = Q K^T (head, q, k) -> S * scale [+ bias: T5's relative buckets, ALiBi] [softcap]
    -> mask (causal, sliding window, padding) -> A = softmax(S) -> O = A V (head, q, d_head)

The rotary cosines and sines come from the model's own rotary module; the rotation is computed here.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.models import anatomy
from explorer.models.anatomy import UnsupportedModel
from explorer.models.styles import text_config
from explorer.runs import hooked

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel

FLOAT32_TOLERANCE = 1e-5
# A float16 / bfloat16 model rounds every step (scores of size ~10 included) to 11 / 8 significant bits,
# while this computation stays in float32: allow 8 units in the last place of the model's dtype
# (float16 0.0078, bfloat16 0.0625). Measured on SmolLM2: float16 0.0028, bfloat16 0.017.
HALF_ULPS = 8
# How the ALiBi tensor m_h * j of a family's own `build_alibi_tensor` enters the logits, times the scale:
# Bloom adds it to the scaled scores (0: unscaled); Falcon's code adds it to the scores before scaling and
# once more, scaled, inside the attention mask it builds.
ALIBI_SCALED = {"falcon": 2}


@dataclass(frozen=True)
class StackCapture:
    """What one forward pass gave for one kind of attention: a stack's self-attention, or cross."""

    stack: str  # encoder | decoder (self-attention) | cross (decoder queries, encoder keys)
    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # readable pieces (explorer.analyses.tokens)
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
    """Every intermediate of one layer's attention, all heads, float32 on the CPU."""

    x: torch.Tensor  # (pos, d_model) layer input after its norm
    q: torch.Tensor  # (head, pos, d_head) X W_Q + b_Q
    k: torch.Tensor  # (kv_head, pos, d_head)
    v: torch.Tensor  # (kv_head, pos, d_head)
    q_normed: torch.Tensor | None  # (head, pos, d_head) after q_norm
    k_normed: torch.Tensor | None  # (kv_head, pos, d_head)
    cos: torch.Tensor | None  # (pos, rotary_dim) cos(m theta_i), each theta_i on both dims of its pair
    sin: torch.Tensor | None
    q_rot: torch.Tensor | None  # (head, pos, d_head) after the rotation
    k_rot: torch.Tensor | None  # (kv_head, pos, d_head)
    scores: torch.Tensor  # (head, q, k) Q K^T
    scale: float
    scale_text: str  # LaTeX of the scale, e.g. 1/\sqrt{64}
    bias: torch.Tensor | None  # (head, q, k) position bias added to the scaled scores
    softcap: float | None
    logits: torch.Tensor  # (head, q, k) scaled (+ bias, softcapped), before the mask
    allowed: torch.Tensor  # (q, k) bool: where a query may look
    window: int | None
    probs: torch.Tensor  # (head, q, k)
    out: torch.Tensor  # (head, q, d_head) A V
    n_rep: int  # query heads per key/value head
    w_shape: tuple[int, int]  # (d_model, d_head) of one head's W_Q
    has_bias: bool  # the projections have biases
    causal: bool = False
    qk_norm: str | None = None  # norm_kind of q_norm: rms | rms1p | layer
    qk_norm_per_head: bool = True  # False: over all heads' dimensions at once (OLMo 2)
    rotary_dim: int | None = None  # dimensions of each head that turn (partial rotary: fewer than d_head)
    interleaved: bool = False  # pairs (0, 1), (2, 3) ... (GPT-J); else halves (i, i + rotary_dim / 2)
    bias_kind: str | None = None  # relative (T5) | alibi
    slopes: torch.Tensor | None = None  # alibi: (head,) m_h
    bias_factor: float = 1.0  # alibi: bias = bias_factor * m_h * j


def tolerance(dtype: torch.dtype) -> float:
    if dtype in (torch.float32, torch.float64):
        return FLOAT32_TOLERANCE
    return HALF_ULPS * torch.finfo(dtype).eps


def _stack(kind: str) -> str:
    return "decoder" if kind == "cross" else kind


def _call(a: anatomy.Anatomy, kind: str, layer: int) -> int | None:
    """Which call of a shared module is this layer's (ALBERT reuses one block)."""
    return layer if a.stacks[_stack(kind)].shared_blocks else None


def capture(
    loaded: LoadedModel, text: str, limit: int | None = None, layer: int | None = None
) -> dict[str, StackCapture]:
    """One forward pass of `text`: per kind of attention, its inputs and the model's attention maps.
    `layer` keeps that layer's only (the others are None): a page holding a capture per user keeps
    megabytes, not the hundreds that every map of a long text takes.
    Raises InputError (empty or too long text) or anatomy.UnsupportedModel."""
    model, tokenizer = loaded.model, loaded.tokenizer
    a = anatomy.of(model)
    ids = hooked.encode(model, tokenizer, text, limit)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    hooks = [
        hooked.keep(seen, (kind, i), a.attention(kind, i).module, "pre", _call(a, kind, i))
        for kind in a.attention_kinds
        for i in range(a.n_layers(_stack(kind)))
        if layer is None or i == layer
    ]
    inputs = hooked.inputs(model, ids)
    options = hooked.options(model, last_logits_only=True)  # the maps and inputs only: no [pos, vocab] logits
    out = hooked.run(loaded, inputs, hooks, output_attentions=True, **options)
    dtype = next(model.parameters()).dtype
    encoded = getattr(out, "encoder_last_hidden_state", None)  # what every cross-attention reads
    result = {}
    for kind in a.attention_kinds:
        if len(a.stacks) > 1:
            maps = {
                "encoder": out.encoder_attentions, "decoder": out.decoder_attentions,
                "cross": out.cross_attentions,
            }[kind]  # fmt: skip
            kind_ids = ids if kind == "encoder" else inputs["decoder_input_ids"][0].tolist()
        else:
            maps, kind_ids = out.attentions, ids
        n, cross = a.n_layers(_stack(kind)), kind == "cross"
        kept = [layer is None or i == layer for i in range(n)]
        result[kind] = StackCapture(
            stack=kind,
            ids=tuple(kind_ids),
            tokens=tuple(display_tokens(tokenizer, kind_ids)),
            inputs=tuple(seen[(kind, i)] if kept[i] else None for i in range(n)),
            attentions=tuple(maps[i][0].detach() if kept[i] else None for i in range(n)),
            dtype=dtype,
            kv_inputs=tuple(encoded[0].detach() if kept[i] else None for i in range(n)) if cross else None,
            key_tokens=tuple(display_tokens(tokenizer, ids)) if cross else None,
        )
    return result


# -- the pieces -----------------------------------------------------------------------------------------


def _heads(y: torch.Tensor, d_head: int) -> torch.Tensor:
    """(pos, n * d_head) -> (n, pos, d_head)."""
    return y.view(y.shape[0], -1, d_head).transpose(0, 1)


def norm_kind(norm: Any) -> str:
    """layer (LayerNorm: mean removed, bias), rms (x / rms(x) * gamma), or rms1p (Gemma: its weight stores
    gamma - 1, starting at zero), as the norm itself computes (anatomy.norm_of)."""
    return anatomy.norm_of(norm).kind


def apply_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """`norm` over the last dimension of x, from its weights, in float32."""
    return anatomy.norm_of(norm)(x)


def _layer_type(model: Any, layer: int) -> str | None:
    """Gemma 3's 'sliding_attention' or 'full_attention' (each type has its own rotary frequencies)."""
    a = anatomy.of(model)
    found = getattr(a.blocks(a.stack_names[0])[layer].attn.module, "layer_type", None)
    types = getattr(text_config(model), "layer_types", None)
    return found or (types[layer] if types else None)


def rotary_module(model: Any) -> Any:
    """The module holding the rotary frequencies: the base model's `rotary_emb` (Gemma 3: one set per
    layer type; GPT-J: a table of sines and cosines, `embed_positions`)."""
    base = getattr(model, "base_model", model)
    found = getattr(base, "rotary_emb", None)
    if found is None:
        found = next((m for m in base.modules() if type(m).__name__.endswith("RotaryEmbedding")), None)
    if found is None:
        raise UnsupportedModel(f"Could not find the rotary embedding module of {type(model).__name__}.")
    return found


def rotary_frequencies(model: Any, layer: int) -> tuple[torch.Tensor, float]:
    """The inverse frequencies theta_i (rotary_dim / 2,) of the layer's rotary embedding and its attention
    scaling, read from the model's rotary module."""
    rot = rotary_module(model)
    if hasattr(rot, "inv_freq"):
        return rot.inv_freq.float().cpu(), float(getattr(rot, "attention_scaling", 1.0))
    table = getattr(rot, "embed_positions", None)
    if table is not None:  # [sin | cos] of m theta_i: position 1 holds theta_i itself
        half = table.shape[-1] // 2
        return torch.atan2(table[1, :half], table[1, half:]).float().cpu(), 1.0
    layer_type = _layer_type(model, layer)
    return (
        getattr(rot, f"{layer_type}_inv_freq").float().cpu(),
        float(getattr(rot, f"{layer_type}_attention_scaling", 1.0)),
    )


def rotary_angles(model: Any, layer: int, n: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (pos, rotary_dim) of positions 0..n-1, from the model's rotary module, laid out as the
    rotation pairs dimensions (halves, or neighbours for GPT-J)."""
    a = anatomy.of(model)
    rot = rotary_module(model)
    pos = torch.arange(n, device=device)
    table = getattr(rot, "embed_positions", None)
    if table is not None:  # GPT-J: [sin | cos] per position, one angle per pair
        sin, cos = table[pos.to(table.device)].float().chunk(2, dim=-1)
        if a.rotary_interleaved:
            return cos.repeat_interleave(2, -1).to(device), sin.repeat_interleave(2, -1).to(device)
        return torch.cat((cos, cos), -1).to(device), torch.cat((sin, sin), -1).to(device)
    x = torch.zeros(1, n, 1, device=device)  # the module reads only its dtype and device
    extra = {}
    if "layer_type" in inspect.signature(rot.forward).parameters:  # Gemma 3: local and global frequencies
        extra["layer_type"] = _layer_type(model, layer)
    cos, sin = rot(x, pos[None], **extra)
    return cos[0].float(), sin[0].float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, halves convention: pairs (x_i, x_{i + r/2}) turn by angle m theta_i, on
    the first r = cos.shape[-1] dimensions (the rest pass unchanged). x (n, pos, d_head), cos/sin (pos, r)."""
    r = cos.shape[-1]
    x_rot, rest = x[..., :r], x[..., r:]
    turned = torch.cat((-x_rot[..., r // 2 :], x_rot[..., : r // 2]), dim=-1)
    return torch.cat((x_rot * cos + turned * sin, rest), dim=-1)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, interleaved (GPT-J): pairs (x_{2i}, x_{2i+1}) turn by angle m theta_i."""
    r = cos.shape[-1]
    x_rot, rest = x[..., :r], x[..., r:]
    turned = torch.stack((-x_rot[..., 1::2], x_rot[..., 0::2]), dim=-1).flatten(-2)
    return torch.cat((x_rot * cos + turned * sin, rest), dim=-1)


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


def relative_table(model: Any, stack: str) -> Any:
    """The attention module of `stack` holding T5's relative position table: its first block's (shared by
    every layer)."""
    first = anatomy.of(model).blocks(stack)[0].attn.module
    if getattr(first, "relative_attention_bias", None) is None:
        raise UnsupportedModel(
            f"The first {stack} layer of {type(model).__name__} has no relative_attention_bias."
        )
    return first


def t5_bias(model: Any, stack: str, n_q: int, n_k: int) -> torch.Tensor:
    """(head, q, k) relative position bias of a T5 stack (learned in its first block, shared by all)."""
    first = relative_table(model, stack)
    rel = torch.arange(n_k)[None, :] - torch.arange(n_q)[:, None]
    bidirectional = not anatomy.of(model).stacks[stack].causal
    buckets = relative_buckets(
        rel, bidirectional, first.relative_attention_num_buckets, first.relative_attention_max_distance
    )
    table = first.relative_attention_bias.weight.detach().float().cpu()  # (bucket, head)
    return table[buckets].permute(2, 0, 1)


def alibi(model: Any, att: anatomy.Attention, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ALiBi from the family's own `build_alibi_tensor`: the slopes m_h (head,) and m_h * j (head, k), j the
    key's position among the real tokens."""
    build = getattr(importlib.import_module(type(att.module).__module__), "build_alibi_tensor", None)
    if build is None:
        raise UnsupportedModel(
            f"{type(model).__name__} uses ALiBi, but its modeling code has no build_alibi_tensor."
        )
    tensor = build(keep.long()[None], att.n_heads, torch.float32)[:, 0].float()  # (head, k)
    one = build(torch.ones(1, 2, dtype=torch.long), att.n_heads, torch.float32)[:, 0, 1].float()  # m_h * 1
    return one, tensor


def sliding_window(model: Any, layer: int, stack: str) -> int | None:
    """The layer's sliding window in tokens, or None for full attention: the attention module's own
    `sliding_window` (Qwen2, Gemma 3: per layer type), else the config's (Mistral, Phi-3: every layer)."""
    if stack == "cross":
        return None
    module = anatomy.of(model).attention(stack, layer).module
    if hasattr(module, "sliding_window"):
        window = module.sliding_window
    else:
        window = getattr(text_config(model), "sliding_window", None)
    return int(window) if window else None


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
        ok = ok & keep.bool().cpu()[None, :]
    return ok


def _softcap(module: Any) -> float | None:
    """The cap c of c * tanh(S / c) on the scaled scores, where the module's code applies it: Gemma 2
    passes its attn_logit_softcapping to the attention function; Gemma 3 keeps the value but does not."""
    cap = getattr(module, "attn_logit_softcapping", None)
    if not cap:
        return None
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):  # no source to read: trust the attribute
        return float(cap)
    return float(cap) if "attn_logit_softcapping" in source else None


def _scale(att: anatomy.Attention) -> tuple[float, str]:
    """The module's own scale, and its LaTeX (1/sqrt(s) when it is one)."""
    scale = att.scale
    if scale == 1.0:
        return 1.0, "1"
    s = 1.0 / scale**2
    if abs(s - round(s)) <= 1e-6 * s:
        return scale, rf"1/\sqrt{{{round(s)}}}"
    return scale, f"{scale:.6g}"


def _qk_norms(att: anatomy.Attention, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """q (pos, head * d_head), k (pos, kv_head * d_head) -> normalized (head, pos, d_head), (kv_head, ...)."""
    if att.q_norm is None:
        return None, None
    d = att.d_head
    if att.qk_norm_per_head:
        return apply_norm(_heads(q, d), att.q_norm), apply_norm(_heads(k, d), att.k_norm)
    # OLMo 2: over every head's dimensions at once, before they are split
    return _heads(apply_norm(q, att.q_norm), d), _heads(apply_norm(k, att.k_norm), d)


def _bias(model: Any, stack: str, layer: int, n: int, keep: torch.Tensor | None) -> tuple:
    """The position bias added to the scaled scores of a self-attention: (kind, (head, q, k) bias, ALiBi
    slopes (head,), ALiBi factor), or Nones where positions enter elsewhere."""
    a = anatomy.of(model)
    if a.position == "relative":
        return "relative", t5_bias(model, stack, n, n), None, 1.0
    if a.position != "alibi":
        return None, None, None, 1.0
    att = a.attention(stack, layer)
    real = torch.ones(n, dtype=torch.long) if keep is None else keep.cpu()
    slopes, per_key = alibi(model, att, real)  # (head,), (head, k)
    times = ALIBI_SCALED.get(a.model_type)
    factor = times * att.scale if times else 1.0
    return "alibi", (factor * per_key)[:, None, :].expand(-1, n, -1), slopes, factor


# -- one layer ------------------------------------------------------------------------------------------


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
    a = anatomy.of(model)
    att = a.attention(stack, layer)
    cross = stack == "cross"
    x = x.detach().float()
    src = x if kv is None else kv.detach().float().to(x.device)
    n, d = x.shape[0], att.d_head
    with torch.no_grad():
        q, k, v = att.q(x), att.k(src), att.v(src)  # (pos, n_heads * d_head), (src, n_kv * d_head) x 2
        q_normed, k_normed = _qk_norms(att, q, k)
        q, k, v = _heads(q, d), _heads(k, d), _heads(v, d)  # (head, pos, d_head), (kv_head, src, d_head) x 2
        qq = q if q_normed is None else q_normed
        kk = k if k_normed is None else k_normed
        cos = sin = q_rot = k_rot = None
        if a.position == "rope" and not cross:
            cos, sin = rotary_angles(model, layer, n, x.device)  # (pos, rotary_dim)
            turn = rotate_pairs if a.rotary_interleaved else rotate
            q_rot, k_rot = turn(qq, cos, sin), turn(kk, cos, sin)
            qq, kk = q_rot, k_rot
        n_rep = att.group
        k_full = kk.repeat_interleave(n_rep, dim=0)  # query head h reads key/value head h // n_rep
        v_full = v.repeat_interleave(n_rep, dim=0)
        scores = qq @ k_full.transpose(-1, -2)  # (head, q, k)
        scale, scale_text = _scale(att)
        logits = scores * scale
        bias_kind, bias, slopes, factor = (
            (None, None, None, 1.0) if cross else _bias(model, stack, layer, n, keep)
        )
        if bias is not None:
            logits = logits + bias.to(x.device)
        softcap = _softcap(att.module)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        window = sliding_window(model, layer, stack)
        causal = a.stacks[_stack(stack)].causal and not cross
        if cross:  # every query sees every source token
            allowed = torch.ones(n, src.shape[0], dtype=torch.bool)
        else:
            allowed = allowed_positions(n, causal, window, keep)
        # The model adds the dtype's lowest value where a query may not look; so does this.
        masked = logits + torch.where(allowed.to(x.device), 0.0, torch.finfo(torch.float32).min)
        probs = torch.softmax(masked, dim=-1)
        out = probs @ v_full
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    return HeadsMath(
        x=x.cpu(), q=q.cpu(), k=k.cpu(), v=v.cpu(), q_normed=cpu(q_normed), k_normed=cpu(k_normed),
        cos=cpu(cos), sin=cpu(sin), q_rot=cpu(q_rot), k_rot=cpu(k_rot), scores=scores.cpu(), scale=scale,
        scale_text=scale_text, bias=cpu(bias), softcap=softcap or None, logits=logits.cpu(),
        allowed=allowed.cpu(), window=window, probs=probs.cpu(), out=out.cpu(), n_rep=n_rep,
        w_shape=(x.shape[1], d), has_bias=att.q.bias() is not None, causal=causal,
        qk_norm=None if att.q_norm is None else norm_kind(att.q_norm), qk_norm_per_head=att.qk_norm_per_head,
        rotary_dim=None if cos is None else cos.shape[-1], interleaved=a.rotary_interleaved,
        bias_kind=bias_kind, slopes=cpu(slopes), bias_factor=factor,
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


def verify(loaded: LoadedModel, text: str) -> dict:
    """Every layer and head of every kind of attention against the model's own maps, as a JSON-ready dict."""
    caps = capture(loaded, text)
    tol = tolerance(next(iter(caps.values())).dtype)
    result: dict[str, Any] = {"model": loaded.card.name, "tolerance": tol}
    per_stack = {stack: max_differences(loaded.model, cap) for stack, cap in caps.items()}
    worst = max(d for rows in per_stack.values() for row in rows for d in row)
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
