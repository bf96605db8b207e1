"""One head's attention from scratch as a list of labelled steps (array, formula, shape), for the page."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer import blocks
from explorer.scratch import HeadsMath, StackCapture, heads_from_scratch, tolerance

TOKENS = "tokens"  # the query side's tokens (the text; the decoder's input for decoder and cross)
KEYS = "keys"  # cross-attention: the encoder's tokens
DIMS = "dims"
NORMS = {
    "bert": ("X = h^{(\\ell)}", "BERT normalizes after each sub-layer, so the layer input goes in as it is."),
    "bart": ("X = h^{(\\ell)}", "BART normalizes after each sub-layer, so the layer input goes in as it is."),
    "gpt2": ("X = \\mathrm{LayerNorm}(h^{(\\ell)})", "GPT-2 applies LayerNorm (ln_1) before attention."),
    "llama": ("X = \\mathrm{RMSNorm}(h^{(\\ell)})", "RMSNorm (input_layernorm) before attention."),
    "gemma3": (
        "X = \\mathrm{RMSNorm}(h^{(\\ell)}) \\odot (1 + \\gamma)",
        "Gemma's RMSNorm (input_layernorm) before attention.",
    ),
    "t5": ("X = \\mathrm{RMSNorm}(h^{(\\ell)})", "T5's layer norm (RMS, no mean, no bias) before attention."),
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


def walkthrough(model, cap: StackCapture, layer: int, head: int) -> Walkthrough:
    """The steps of head `head` in `layer` of the captured stack, and the check against the model."""
    kind = blocks.style(model)
    cross = cap.stack == "cross"
    kv = cap.kv_inputs[layer] if cross else None
    m: HeadsMath = heads_from_scratch(model, cap.stack, layer, cap.inputs[layer], kv=kv)
    kt = KEYS if cross else TOKENS  # the axis of keys
    src = "E" if cross else "X"
    g = head // m.n_rep
    n, d_model = m.x.shape
    d_head = m.q.shape[-1]
    b = " + b" if m.has_bias else ""
    steps = []
    input_tex, input_note = NORMS[kind]
    steps.append(Step("Layer input X (after its norm)", input_tex, _np(m.x), TOKENS, DIMS, input_note))
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
    steps.append(
        Step(
            f"Queries Q, head {head}", f"Q = X W_Q^{{({head})}}{b}, \\quad {w}", _np(m.q[head]), TOKENS, DIMS
        )
    )
    steps.append(Step(f"Keys K, kv head {g}", f"K = {src} W_K^{{({g})}}{b}", _np(m.k[g]), kt, DIMS, shared))
    steps.append(Step(f"Values V, kv head {g}", f"V = {src} W_V^{{({g})}}{b}", _np(m.v[g]), kt, DIMS))
    if m.q_normed is not None:
        gemma = "Gemma" in type(blocks.parts(model, cap.stack, layer).attn.q_norm).__name__

        def norm_tex(v: str) -> str:
            gamma = f"(1 + \\gamma_{v})" if gemma else f"\\gamma_{v}"
            return (
                f"\\hat {v} = \\frac{{{v}}}{{\\sqrt{{\\mathrm{{mean}}({v}^2) + \\epsilon}}}} \\odot {gamma}"
            )

        note = "Each query and key vector is RMS-normalized on its own (q_norm, k_norm) before the rotation."
        steps.append(Step("Q after q_norm", norm_tex("q"), _np(m.q_normed[head]), TOKENS, DIMS, note))
        steps.append(Step("K after k_norm", norm_tex("k"), _np(m.k_normed[g]), TOKENS, DIMS))
    if m.q_rot is not None:

        def rot_tex(v: str) -> str:
            return (
                f"\\tilde {v}_m = {v}_m \\odot \\cos(m\\theta) "
                f"+ \\mathrm{{rot}}({v}_m) \\odot \\sin(m\\theta), "
                "\\quad \\mathrm{rot}(x) = (-x_{d/2:}, x_{:d/2})"
            )

        note = (
            "Rotary position embedding: dimension pairs (i, i + d/2) of the vector at position m turn by the "
            "angle m·θᵢ, θᵢ = base^(−2i/d), read from the model's rotary module."
        )
        steps.append(Step("Rotation angles m·θ (cos shown)", "\\cos(m\\theta_i)", _np(m.cos), TOKENS, DIMS))
        steps.append(Step("Q rotated by position", rot_tex("q"), _np(m.q_rot[head]), TOKENS, DIMS, note))
        steps.append(Step("K rotated by position", rot_tex("k"), _np(m.k_rot[g]), TOKENS, DIMS))
    steps.append(
        Step(
            "Scores Q Kᵀ",
            "S = Q K^\\top",
            _np(m.scores[head]),
            TOKENS,
            kt,
            "Rows: queries; columns: keys.",
        )
    )
    if kind == "t5":
        scale_note = "T5 does not scale its scores: it learned weights that make it unnecessary."
    elif kind == "gemma3":
        pre = model.config.query_pre_attn_scalar
        scale_note = (
            f"Gemma scales by 1/√query_pre_attn_scalar ({pre}), here instead of 1/√d_head ({d_head})."
        )
    else:
        scale_note = f"Divided by √d_k = √{d_head}, so the scores' spread does not grow with the head size."
    steps.append(
        Step(
            "Scaled scores",
            f"S' = S \\cdot {m.scale_text}",
            _np(m.scores[head] * m.scale),
            TOKENS,
            kt,
            scale_note,
        )
    )
    if m.bias is not None:
        note = "T5 adds a learned bias per head and relative-distance bucket (shared by every layer)."
        steps.append(
            Step(
                "Relative position bias B",
                "B_{ij} = b_h(\\mathrm{bucket}(j - i))",
                _np(m.bias[head]),
                TOKENS,
                TOKENS,
                note,
            )
        )
        steps.append(Step("Scores plus bias", "S' = S + B", _np(m.logits[head]), TOKENS, TOKENS))
    if m.softcap:
        steps.append(
            Step(
                "Soft-capped",
                f"S' = {m.softcap} \\tanh(S' / {m.softcap})",
                _np(m.logits[head]),
                TOKENS,
                kt,
            )
        )
    masked = _np(m.logits[head]).copy()
    masked[~_np(m.allowed).astype(bool)] = np.nan
    rules = []
    if blocks.causal(model, cap.stack):
        rules.append("j > i (a token cannot see the future)")
    if m.window is not None:
        rules.append(f"i − j ≥ {m.window} (outside this layer's sliding window of {m.window})")
    mask_tex = "S'_{ij} = -\\infty \\text{ where } " + ("j > i" if blocks.causal(model, cap.stack) else "")
    if m.window is not None:
        mask_tex += f"\\text{{ or }} i - j \\ge {m.window}"
    if not rules:
        mask_tex = "S'_{ij} \\text{ unchanged (no padding in one text)}"
    note = (
        ("Blank cells get −∞ where " + "; ".join(rules) + ".")
        if rules
        else "Every target token sees every source token."
        if cross
        else "An encoder: every token sees every token."
    )
    if m.window is not None and n <= m.window:
        note += f" The text has {n} tokens, no more than the window, so the window hides nothing here."
    elif (
        m.window is None and getattr(model.config, "sliding_window", None) and blocks.style(model) == "gemma3"
    ):
        note += " This is one of the model's full-attention layers: no sliding window."
    steps.append(Step("Masked", mask_tex, masked, TOKENS, kt, note))
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
