"""Plot builders: pure functions from cards and arrays to Plotly figures."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from explorer.models.card import ModelCard
from explorer.web.display import plotly_text

COLORS = {
    "embed": "#dbeafe",
    "norm": "#fef3c7",
    "attn": "#fde2e4",
    "cross": "#e9d5ff",
    "ffn": "#dcfce7",
    "head": "#e0f2fe",
    "io": "#f1f5f9",
    "block": "rgba(148,163,184,0.12)",
}
INK = "#0f172a"
PX_PER_UNIT = 62
LINE_H = 0.26  # one 12 px line of text, in data units
BOX_H = 0.62
GAP = 0.3
ADD_R = 0.16


@dataclass(frozen=True)
class _Item:
    kind: str  # norm | attn | cross | ffn | add
    text: str


def _short_norm(card: ModelCard) -> str:
    return plotly_text(card.norm.split(",")[0])


def _attention_text(card: ModelCard, causal: bool) -> str:
    title = "Masked self-attention" if causal else "Self-attention"
    kv = f", {card.n_kv_heads} kv heads" if card.n_kv_heads != card.n_heads else ""
    lines = [f"<b>{title}</b>", f"{card.n_heads} heads{kv}, d_head {card.d_head}"]
    pos = card.position_encoding
    if pos.startswith("rotary"):
        lines.append("RoPE on q and k")
    elif pos.startswith("relative"):
        lines.append("+ relative position bias")
    elif pos.startswith("ALiBi"):
        lines.append("+ ALiBi bias")
    if card.sliding_window:
        n_sliding = sum(t == "sliding_attention" for t in card.layer_types) or card.n_layers
        lines.append(f"sliding window {card.sliding_window} on {n_sliding} of {card.n_layers} layers")
    return "<br>".join(lines)


def _ffn_text(card: ModelCard) -> str:
    size = f"{card.d_model} → {card.d_ff} → {card.d_model}" if card.d_ff else f"width {card.d_model}"
    return f"<b>Feed-forward</b><br>{plotly_text(card.ffn)}<br>{size}"


def _block_items(card: ModelCard, causal: bool, cross: bool) -> list[_Item]:
    """Sub-layers of one block, bottom to top, in the order the model computes them."""
    norm = _Item("norm", _short_norm(card))
    subs = [_Item("attn", _attention_text(card, causal))]
    if cross:
        subs.append(_Item("cross", "<b>Cross-attention</b><br>q from decoder, k/v from encoder"))
    subs.append(_Item("ffn", _ffn_text(card)))
    items: list[_Item] = []
    placement = card.norm_placement
    for sub in subs:
        if placement.startswith("post"):
            items += [sub, _Item("add", "+"), norm]
        elif placement.startswith("pre- and post"):
            items += [norm, sub, norm, _Item("add", "+")]
        else:
            items += [norm, sub, _Item("add", "+")]
    return items


class _Canvas:
    """Shapes and annotations gathered as plain dicts and set on the figure once (`figure()`): Plotly
    checks the whole list again at every add_shape or add_annotation, which made a diagram cost 0.4 s."""

    def __init__(self) -> None:
        self.fig = go.Figure()
        self.shapes: list[dict] = []
        self.annotations: list[dict] = []

    def shape(self, **spec) -> None:
        self.shapes.append(spec)

    def box(self, x0: float, x1: float, y0: float, y1: float, text: str, kind: str) -> None:
        self.shape(
            type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line=dict(color="#475569", width=1),
            fillcolor=COLORS[kind], layer="below",
        )  # fmt: skip
        self.annotations.append(
            dict(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False, font=dict(size=12, color=INK))
        )

    def add_node(self, x: float, y: float) -> None:
        self.shape(
            type="circle", x0=x - ADD_R, x1=x + ADD_R, y0=y - ADD_R, y1=y + ADD_R,
            line=dict(color="#475569"), fillcolor="white",
        )  # fmt: skip
        self.annotations.append(
            dict(x=x, y=y, text="<b>+</b>", showarrow=False, font=dict(size=13, color=INK))
        )

    def arrow(self, x0: float, y0: float, x1: float, y1: float, color: str = "#334155") -> None:
        self.annotations.append(dict(
            x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
            showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.4, arrowcolor=color,
        ))  # fmt: skip

    def label(self, x: float, y: float, text: str, size: int = 12, anchor: str = "center") -> None:
        self.annotations.append(
            dict(x=x, y=y, text=text, showarrow=False, font=dict(size=size, color=INK), xanchor=anchor)
        )

    def figure(self) -> go.Figure:
        self.fig.update_layout(shapes=self.shapes, annotations=self.annotations)
        return self.fig


def _stack(
    c: _Canvas,
    card: ModelCard,
    x0: float,
    x1: float,
    y: float,
    *,
    layers: int,
    causal: bool,
    cross: bool,
    title: str,
    bottom: str,
    top: str,
    final_norm: bool,
) -> tuple[float, float]:
    """Draws one stack from y upwards; returns (top y, y of the cross-attention box centre or -1)."""
    xm = (x0 + x1) / 2
    c.box(x0 + 0.6, x1 - 0.6, y, y + BOX_H, bottom, "io")
    y += BOX_H
    c.arrow(xm, y, xm, y + GAP)
    y += GAP
    embed = f"<b>Token embedding</b><br>{card.vocab_size:,} × {card.d_model}"
    if card.position_encoding.startswith(("learned", "sinusoidal")):
        embed += f"<br>+ {plotly_text(card.position_encoding.split(' (')[0])} positions"
    c.box(x0 + 0.3, x1 - 0.3, y, y + BOX_H + 0.2, embed, "embed")
    y += BOX_H + 0.2
    c.arrow(xm, y, xm, y + GAP)
    y += GAP

    items = _block_items(card, causal, cross)
    block_y0 = y
    y += 0.25
    resid_x = x0 + 0.35
    inner0, inner1 = x0 + 0.8, x1 - 0.3
    cross_y = -1.0
    last_top = y
    for item in items:
        if item.kind == "add":
            cy = y + ADD_R
            c.arrow(xm, last_top, xm, cy - ADD_R)
            c.add_node(xm, cy)
            c.arrow(resid_x, cy, xm - ADD_R, cy, color="#64748b")
            y = last_top = cy + ADD_R
        else:
            lines = item.text.count("<br>") + 1
            h = BOX_H * 0.55 if item.kind == "norm" else max(BOX_H, LINE_H * lines + 0.1)
            y += GAP * 0.6
            c.arrow(xm, last_top, xm, y)
            c.box(inner0, inner1, y, y + h, item.text, item.kind)
            if item.kind == "cross":
                cross_y = y + h / 2
            y += h
            last_top = y
        y += 0.05
    y += 0.25
    c.shape(
        type="rect", x0=x0, x1=x1, y0=block_y0, y1=y, line=dict(color="#64748b", dash="dot"),
        fillcolor=COLORS["block"], layer="below",
    )  # fmt: skip
    c.shape(type="line", x0=resid_x, x1=resid_x, y0=block_y0, y1=y, line=dict(color="#64748b", width=2))
    c.label(resid_x + 0.05, block_y0 + 0.12, "residual", size=10, anchor="left")
    c.label(x1 + 0.08, (block_y0 + y) / 2, f"<b>× {layers}</b>", size=16, anchor="left")
    c.label(xm, y + 0.18, f"<b>{title}</b>", size=13)
    y += 0.4
    if final_norm:
        c.arrow(xm, y - 0.05, xm, y + GAP)
        y += GAP
        c.box(inner0, inner1, y, y + BOX_H * 0.55, f"Final {_short_norm(card)}", "norm")
        y += BOX_H * 0.55
    c.arrow(xm, y, xm, y + GAP)
    y += GAP
    c.box(x0 + 0.3, x1 - 0.3, y, y + BOX_H, top, "head")
    return y + BOX_H, cross_y


def _head_text(card: ModelCard) -> str:
    if card.family == "encoder":
        if card.architecture.endswith("ForMaskedLM"):
            return f"<b>Masked-LM head</b><br>{card.d_model} → {card.vocab_size:,} logits per token"
        if card.architecture.endswith("Model"):
            return f"<b>Hidden states</b><br>one {card.d_model}-wide vector per token"
        return f"<b>{plotly_text(card.architecture)} head</b><br>on {card.d_model}-wide token vectors"
    tied = " (tied to the embedding)" if card.tied_embeddings else ""
    return f"<b>LM head{tied}</b><br>{card.d_model} → {card.vocab_size:,} logits: next-token probabilities"


def architecture_diagram(card: ModelCard) -> go.Figure:
    """The block structure of this model, drawn from its card (sizes, norms, attention kind)."""
    c = _Canvas()
    pre = not card.norm_placement.startswith("post")
    if card.family == "encoder-decoder":
        enc_top, _ = _stack(
            c, card, 0.0, 4.6, 0.0, layers=card.encoder_layers or 0, causal=False, cross=False,
            title="Encoder", bottom="source text → token ids", final_norm=pre,
            top="<b>Encoder output</b><br>keys/values for cross-attention",
        )  # fmt: skip
        dec_top, cross_y = _stack(
            c, card, 5.6, 10.2, 0.0, layers=card.decoder_layers or 0, causal=True, cross=True,
            title="Decoder", bottom="target so far → token ids", top=_head_text(card), final_norm=pre,
        )  # fmt: skip
        # From the encoder output over to the side of each decoder block's cross-attention.
        curve = f"M 2.3 {enc_top} C 2.3 {enc_top + 0.6}, 5.0 {enc_top + 0.6}, 5.0 {cross_y} L 6.35 {cross_y}"
        c.shape(
            type="path", path=curve, line=dict(color="#7c3aed", width=2),
        )  # fmt: skip
        c.arrow(6.0, cross_y, 6.45, cross_y, color="#7c3aed")
        top, width = max(enc_top, dec_top) + 0.7, 11.2
    else:
        decoder = card.family == "decoder"
        top, _ = _stack(
            c, card, 0.0, 5.2, 0.0, layers=card.n_layers, causal=decoder, cross=False,
            title="Decoder block" if decoder else "Encoder block", bottom="text → token ids",
            top=_head_text(card), final_norm=pre,
        )  # fmt: skip
        width = 6.6
        if card.layer_types:
            width = _layer_strip(c, card, 6.3, top)
        top += 0.3
    fig = c.figure()
    # A fixed size in pixels (PX_PER_UNIT per data unit on both axes): the text is sized in pixels, so
    # a figure stretched or squeezed to its container would spill text out of the boxes.
    x0, y0 = -0.9, -0.2
    fig.update_xaxes(visible=False, range=[x0, width], fixedrange=True)
    fig.update_yaxes(visible=False, range=[y0, top], fixedrange=True)
    margin = dict(l=10, r=10, t=50, b=10)
    fig.update_layout(
        title=dict(text=f"{plotly_text(card.architecture)}: {card.family}, {card.n_layers} layers", x=0.02),
        width=int(PX_PER_UNIT * (width - x0)) + margin["l"] + margin["r"],
        height=int(PX_PER_UNIT * (top - y0)) + margin["t"] + margin["b"],
        margin=margin,
        plot_bgcolor="white", showlegend=False,
    )  # fmt: skip
    return fig


def _layer_strip(c: _Canvas, card: ModelCard, x: float, top: float) -> float:
    """One square per layer, coloured by its attention type (Gemma: sliding or full)."""
    n = len(card.layer_types)
    size = min(0.42, (top - 2.0) / n)
    ys = [1.0 + i * size for i in range(n)]
    kinds = sorted(set(card.layer_types))
    palette = ["#f97316", "#2563eb", "#16a34a", "#9333ea"]
    for k, kind in enumerate(kinds):
        idx = [i for i, t in enumerate(card.layer_types) if t == kind]
        text = plotly_text(kind.replace("_", " "))
        if kind == "sliding_attention" and card.sliding_window:
            text += f" (window {card.sliding_window})"
        c.fig.add_trace(
            go.Scatter(
                x=[x] * len(idx),
                y=[ys[i] + size / 2 for i in idx],
                mode="markers",
                marker=dict(symbol="square", size=max(6, size * 34), color=palette[k % len(palette)]),
                name=text,
                hovertext=[f"layer {i}: {text}" for i in idx],
                hoverinfo="text",
            )  # fmt: skip
        )
        c.label(
            x + 0.3,
            ys[-1] + size + 0.35 + 0.35 * k,
            f"<span style='color:{palette[k % len(palette)]}'>■</span> {text}",
            size=11,
            anchor="left",
        )
    c.label(x, ys[0] - 0.35, "layer 0", size=10)
    c.label(x, ys[-1] + size + 0.05, f"layer {n - 1}", size=10)
    return x + 3.6


def parameter_chart(groups: dict[str, int]) -> go.Figure:
    """Horizontal bars: parameters per group, with counts and shares on hover and as labels."""
    total = sum(groups.values())
    names = list(groups)[::-1]
    counts = [groups[n] for n in names]
    fig = go.Figure(
        go.Bar(
            x=counts,
            y=names,
            orientation="h",
            marker_color="#6366f1",
            text=[f"{c:,} ({c / total:.1%})" for c in counts],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} parameters<extra></extra>",
        )  # fmt: skip
    )
    fig.update_layout(
        title=dict(text=f"Where the {total:,} parameters are", x=0.02), height=60 + 34 * len(names),
        margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(title="parameters"), plot_bgcolor="white",
    )  # fmt: skip
    return fig
