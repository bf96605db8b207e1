"""One head's attention from scratch as a list of labelled steps (array, formula, shape), for the page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analyses.scratch import (
    HeadsMath,
    StackCapture,
    heads_from_scratch,
    norm_kind,
    sliding_window,
    tolerance,
)
from explorer.models import anatomy

TOKENS = "tokens"  # the query side's tokens (the text; the decoder's input for decoder and cross)
KEYS = "keys"  # cross-attention: the encoder's tokens
DIMS = "dims"
NORM_TEX = {
    "layer": ("X = \\mathrm{LayerNorm}(h^{(\\ell)})", "LayerNorm"),
    "rms": ("X = \\mathrm{RMSNorm}(h^{(\\ell)})", "RMSNorm (no mean removed, no bias)"),
    "rms1p": ("X = \\mathrm{RMSNorm}(h^{(\\ell)}) \\odot (1 + \\gamma)", "Gemma's RMSNorm"),
}


@dataclass(frozen=True)
class Step:
    title: str
    latex: str
    values: np.ndarray  # 2-D
    rows: str  # TOKENS, KEYS or DIMS
    cols: str
    note: str = ""

    @property
    def shape(self) -> str:
        return " × ".join(str(n) for n in self.values.shape)


@dataclass(frozen=True)
class Walkthrough:
    steps: tuple[Step, ...]
    computed: np.ndarray  # (q, k) this head's attention, from scratch
    model_map: np.ndarray  # (q, k) the model's own
    max_abs_diff: float
    tolerance: float
    head: int
    kv_head: int
    n_rep: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _name_in(block: anatomy.Block, module) -> str:
    """The attribute path of `module` inside the block ('input_layernorm', 'layer.0.layer_norm')."""
    return next((name for name, m in block.module.named_modules() if m is module), type(module).__name__)


def _input_step(a: anatomy.Anatomy, kind: str, layer: int, m: HeadsMath) -> Step:
    block = a.blocks("decoder" if kind == "cross" else kind)[layer]
    norm = block.cross_norm if kind == "cross" else block.attn_norm
    if norm is None:
        tex = "X = h^{(\\ell)}"
        where = "each sub-layer's output (as OLMo 2)" if a.placement == "post-out" else "after each sub-layer"
        note = f"This model normalizes {where}, so the layer input goes in as it is."
    else:
        tex, name = NORM_TEX[norm_kind(norm)]
        note = f"{name} ({_name_in(block, norm)}) before attention."
        if a.parallel and kind != "cross":
            note += " The feed-forward network reads the same input, in parallel with attention."
    return Step("Layer input X (after its norm)", tex, _np(m.x), TOKENS, DIMS, note)


def _norm_steps(m: HeadsMath, head: int, g: int) -> list[Step]:
    def tex(v: str) -> str:
        gamma = f"(1 + \\gamma_{v})" if m.qk_norm == "rms1p" else f"\\gamma_{v}"
        if m.qk_norm == "layer":
            centred = f"{v} - \\mathrm{{mean}}({v})"
            spread = f"\\sqrt{{\\mathrm{{var}}({v}) + \\epsilon}}"
            return f"\\hat {v} = \\frac{{{centred}}}{{{spread}}} \\odot \\gamma_{v} + \\beta_{v}"
        return f"\\hat {v} = \\frac{{{v}}}{{\\sqrt{{\\mathrm{{mean}}({v}^2) + \\epsilon}}}} \\odot {gamma}"

    what = "LayerNorm-ed" if m.qk_norm == "layer" else "RMS-normalized"
    if m.qk_norm_per_head:
        note = f"Each query and key vector is {what} on its own (q_norm, k_norm) before the rotation."
    else:
        note = (
            f"The whole query projection (every head at once) is {what} before it is split into heads; "
            "likewise the keys."
        )
    return [
        Step("Q after q_norm", tex("q"), _np(m.q_normed[head]), TOKENS, DIMS, note),
        Step("K after k_norm", tex("k"), _np(m.k_normed[g]), TOKENS, DIMS),
    ]


def _rotation_steps(m: HeadsMath, head: int, g: int) -> list[Step]:
    r, d = m.rotary_dim, m.q.shape[-1]
    if m.interleaved:
        rot = "\\mathrm{rot}(x)_{2i} = -x_{2i+1},\\ \\mathrm{rot}(x)_{2i+1} = x_{2i}"
        pairs = "neighbouring dimensions (2i, 2i + 1)"
    else:
        rot = (
            "\\mathrm{rot}(x) = (-x_{r/2:r}, x_{:r/2})"
            if r < d
            else "\\mathrm{rot}(x) = (-x_{d/2:}, x_{:d/2})"
        )
        pairs = "dimension pairs (i, i + r/2)" if r < d else "dimension pairs (i, i + d/2)"

    def tex(v: str) -> str:
        part = f"_{{:{r}}}" if r < d else ""
        return (
            f"\\tilde {v}_m{part} = {v}_m{part} \\odot \\cos(m\\theta) "
            f"+ \\mathrm{{rot}}({v}_m{part}) \\odot \\sin(m\\theta), \\quad {rot}"
        )

    note = (
        f"Rotary position embedding: {pairs} of the vector at position m turn by the angle m·θᵢ, "
        "θᵢ = base^(−2i/r), read from the model's rotary module."
    )
    if r < d:
        note += f" Only the first {r} of the head's {d} dimensions turn (partial rotary); the rest stay."
    return [
        Step("Rotation angles m·θ (cos shown)", "\\cos(m\\theta_i)", _np(m.cos), TOKENS, DIMS),
        Step("Q rotated by position", tex("q"), _np(m.q_rot[head]), TOKENS, DIMS, note),
        Step("K rotated by position", tex("k"), _np(m.k_rot[g]), TOKENS, DIMS),
    ]


def _scale_note(model, m: HeadsMath, d_head: int) -> str:
    if m.scale == 1.0:
        return "This model does not scale its scores: it learned weights that make it unnecessary."
    if abs(m.scale - d_head**-0.5) <= 1e-9:
        return f"Divided by √d_k = √{d_head}, so the scores' spread does not grow with the head size."
    pre = getattr(model.config.get_text_config(), "query_pre_attn_scalar", None)
    if pre and abs(m.scale - pre**-0.5) <= 1e-9:
        return f"Scaled by 1/√query_pre_attn_scalar ({pre}), here instead of 1/√d_head ({d_head})."
    return f"The attention module's own scale, {m.scale:.4g}, here instead of 1/√d_head ({d_head})."


def _bias_steps(m: HeadsMath, head: int, kt: str) -> list[Step]:
    if m.bias_kind == "relative":
        title, tex = "Relative position bias B", "B_{ij} = b_h(\\mathrm{bucket}(j - i))"
        note = "T5 adds a learned bias per head and relative-distance bucket (shared by every layer)."
    else:
        slope = float(m.slopes[head])
        title = "ALiBi bias B"
        tex = (
            "B_{ij} = m_h \\cdot j"
            if m.bias_factor == 1.0
            else f"B_{{ij}} = {m.bias_factor:.4g} \\cdot m_h \\cdot j"
        )
        note = (
            f"ALiBi: head {head} adds its slope m_h = {slope:.4g} times the key's position j. Softmax "
            "ignores what is the same along a row, so this is −m_h (i − j): a penalty growing with distance."
        )
        if m.bias_factor != 1.0:
            note += f" This model's code scales it by {m.bias_factor:.4g}."
    plus = "S' = S + B" if m.scale == 1.0 else f"S' = S \\cdot {m.scale_text} + B"
    return [
        Step(title, tex, _np(m.bias[head]), TOKENS, kt, note),
        Step("Scores plus bias", plus, _np(m.logits[head]), TOKENS, kt),
    ]


def _mask_step(model, cap: StackCapture, layer: int, m: HeadsMath, head: int, kt: str) -> Step:
    masked = _np(m.logits[head]).copy()
    masked[~_np(m.allowed).astype(bool)] = np.nan
    rules = []
    if m.causal:
        rules.append("j > i (a token cannot see the future)")
    if m.window is not None:
        rules.append(f"i − j ≥ {m.window} (outside this layer's sliding window of {m.window})")
    tex = "S'_{ij} = -\\infty \\text{ where } " + ("j > i" if m.causal else "")
    if m.window is not None:
        tex += f"\\text{{ or }} i - j \\ge {m.window}"
    if not rules:
        tex = "S'_{ij} \\text{ unchanged (no padding in one text)}"
    if rules:
        note = "Blank cells get −∞ where " + "; ".join(rules) + "."
    else:
        note = (
            "Every target token sees every source token."
            if cap.stack == "cross"
            else "An encoder: every token sees every token."
        )
    n = m.x.shape[0]
    if m.window is not None and n <= m.window:
        note += f" The text has {n} tokens, no more than the window, so the window hides nothing here."
    elif m.window is None and any(sliding_window(model, i, cap.stack) for i in range(cap.n_layers)):
        note += " This is one of the model's full-attention layers: no sliding window."
    return Step("Masked", tex, masked, TOKENS, kt, note)


def walkthrough(model, cap: StackCapture, layer: int, head: int) -> Walkthrough:
    """The steps of head `head` in `layer` of the captured stack, and the check against the model."""
    cross = cap.stack == "cross"
    kv = cap.kv_inputs[layer] if cross else None
    m: HeadsMath = heads_from_scratch(model, cap.stack, layer, cap.inputs[layer], kv=kv)
    kt = KEYS if cross else TOKENS  # the axis of keys
    src = "E" if cross else "X"
    g = head // m.n_rep
    d_model, d_head = m.x.shape[1], m.q.shape[-1]
    b = " + b" if m.has_bias else ""
    steps = [_input_step(anatomy.of(model), cap.stack, layer, m)]
    if cross:
        note = "Cross-attention: queries come from the decoder, keys and values from the encoder's output."
        steps.append(
            Step("Encoder output E", "E = \\mathrm{Encoder}(\\text{source})", _np(kv), KEYS, DIMS, note)
        )
    shared = (
        f"Key/value head {g} serves query heads {g * m.n_rep}–{(g + 1) * m.n_rep - 1}."
        if m.n_rep > 1
        else "One key/value head per query head."
    )
    w = f"W \\in \\mathbb{{R}}^{{{d_model} \\times {d_head}}}"
    steps += [
        Step(
            f"Queries Q, head {head}", f"Q = X W_Q^{{({head})}}{b}, \\quad {w}", _np(m.q[head]), TOKENS, DIMS
        ),
        Step(f"Keys K, kv head {g}", f"K = {src} W_K^{{({g})}}{b}", _np(m.k[g]), kt, DIMS, shared),
        Step(f"Values V, kv head {g}", f"V = {src} W_V^{{({g})}}{b}", _np(m.v[g]), kt, DIMS),
    ]
    if m.q_normed is not None:
        steps += _norm_steps(m, head, g)
    if m.q_rot is not None:
        steps += _rotation_steps(m, head, g)
    steps.append(
        Step("Scores Q Kᵀ", "S = Q K^\\top", _np(m.scores[head]), TOKENS, kt, "Rows: queries; columns: keys.")
    )
    scaled = _np(m.scores[head] * m.scale)
    steps.append(
        Step(
            "Scaled scores",
            f"S' = S \\cdot {m.scale_text}",
            scaled,
            TOKENS,
            kt,
            _scale_note(model, m, d_head),
        )
    )
    if m.bias is not None:
        steps += _bias_steps(m, head, kt)
    if m.softcap:
        tex = f"S' = {m.softcap:g} \\tanh(S' / {m.softcap:g})"
        steps.append(Step("Soft-capped", tex, _np(m.logits[head]), TOKENS, kt))
    steps.append(_mask_step(model, cap, layer, m, head, kt))
    steps.append(
        Step(
            "Attention weights A = softmax", "A_{ij} = \\frac{e^{S'_{ij}}}{\\sum_k e^{S'_{ik}}}",
            _np(m.probs[head]), TOKENS, kt, "Each row sums to 1.",
        )
    )  # fmt: skip
    steps.append(Step(f"Head output A V, head {head}", "O = A V", _np(m.out[head]), TOKENS, DIMS))
    own = cap.attentions[layer][head].float().cpu()
    diff = float((m.probs[head] - own).abs().max())
    return Walkthrough(
        steps=tuple(steps), computed=_np(m.probs[head]), model_map=_np(own), max_abs_diff=diff,
        tolerance=tolerance(cap.dtype), head=head, kv_head=g, n_rep=m.n_rep,
    )  # fmt: skip
