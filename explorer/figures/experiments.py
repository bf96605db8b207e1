"""Plotly figures of the Experiments page: distributions before and after, the head-scan and patching
heatmaps (diverging colours centred at 0), expert routing. Pure functions from arrays to figures; token
strings and model names are escaped (Plotly reads HTML in labels and hover text)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.figures.attention import labels, layer_head_axes, layer_position_heatmap
from explorer.web.display import plotly_text

DIVERGING = "RdBu"  # red: lower, blue: higher; white at 0


def _title(text: str) -> dict:
    return dict(text=plotly_text(text), font_size=15, x=0.01)


def paired_bars(
    tokens: Sequence[str], left: Sequence[float | None], right: Sequence[float | None],
    names: tuple[str, str], title: str, x_title: str = "probability",
) -> go.Figure:  # fmt: skip
    """Horizontal bars two by two: for each token (first at the top) its value under `names[0]` and
    `names[1]` (None: not available, drawn as no bar)."""
    y = [f"{plotly_text(t)} ·{i}" for i, t in enumerate(tokens)]
    fig = go.Figure()
    for name, values, color in ((names[0], left, "#64748b"), (names[1], right, "#e11d48")):
        v = [np.nan if x is None else float(x) for x in values]
        fig.add_trace(
            go.Bar(
                x=v, y=y, orientation="h", name=plotly_text(name), marker_color=color,
                hovertemplate=f"{plotly_text(name)}<br>%{{y}}<br>{x_title} %{{x:.4f}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=_title(title), barmode="group", height=140 + 34 * len(tokens),
        yaxis=dict(autorange="reversed", type="category"), xaxis_title=x_title,
        margin=dict(l=10, r=10, t=50, b=10), plot_bgcolor="white", legend=dict(orientation="h", y=-0.08),
    )  # fmt: skip
    return fig


def _limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(max(finite.max() if finite.size else 0.0, 1e-6))


def head_scan_figure(values: np.ndarray, title: str, value_name: str = "Δ log-prob") -> go.Figure:
    """A [layer, head] matrix of effects, diverging colours centred at 0 (red: the head's removal lowers
    the value), the value written in each cell when there is room."""
    n_layers, n_heads = values.shape
    m = _limit(values)
    name = plotly_text(value_name)
    text = [[f"{v:+.2f}" for v in row] for row in values] if n_layers * n_heads <= 400 else None
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(values, dtype=np.float32), x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{i}" for i in range(n_layers)], text=text, texttemplate="%{text}" if text else None,
            textfont_size=9, colorscale=DIVERGING, zmid=0.0, zmin=-m, zmax=m,
            colorbar=dict(title=name, thickness=12),
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{name} %{{z:+.4f}}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(title=_title(title))
    return layer_head_axes(fig, n_layers, n_heads)


def patching_figure(restored: np.ndarray, tokens: Sequence[str], title: str) -> go.Figure:
    """[layer, pos] shares of the logit difference restored; diverging colours centred at 0, at least
    -1 to 1 (1: the clean answer fully restored)."""
    m = max(1.0, _limit(restored))
    return layer_position_heatmap(
        restored, tokens, title, "restored", colorscale=DIVERGING, zmin=-m, zmax=m,
    )  # fmt: skip


def routing_figure(weights: np.ndarray, tokens: Sequence[str], title: str) -> go.Figure:
    """[pos, expert] router weights of one layer: tokens down the side, experts along the top (0: the
    expert was not chosen for that token)."""
    n_pos, n_experts = weights.shape
    cats = labels(tokens)
    text = [[f"{v:.2f}" if v > 0 else "" for v in row] for row in weights] if weights.size <= 2000 else None
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(weights, dtype=np.float32), x=[f"E{e}" for e in range(n_experts)], y=cats,
            text=text, texttemplate="%{text}" if text else None, textfont_size=10,
            colorscale="Blues", zmin=0.0, zmax=1.0, colorbar=dict(title="weight", thickness=12),
            hovertemplate="token %{y}<br>expert %{x}<br>weight %{z:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=_title(title),
        xaxis=dict(title="expert", side="top", type="category"),
        yaxis=dict(title="token", autorange="reversed", type="category", categoryarray=cats),
        width=int(min(1200, max(480, 200 + 40 * n_experts))),
        height=int(min(1600, 200 + 22 * n_pos)),
        margin=dict(l=10, r=10, t=110, b=10),
    )
    return fig


def usage_figure(usage: np.ndarray, layers: Sequence[int], title: str) -> go.Figure:
    """[router, expert] how many tokens picked each expert, layer by layer."""
    n_layers, n_experts = usage.shape
    fig = go.Figure(
        go.Heatmap(
            z=usage.astype(np.float32), x=[f"E{e}" for e in range(n_experts)], y=[f"L{i}" for i in layers],
            colorscale="Viridis", colorbar=dict(title="tokens", thickness=12),
            hovertemplate="layer %{y}, expert %{x}<br>%{z} tokens<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=_title(title), xaxis=dict(title="expert", side="top", type="category"),
        yaxis=dict(title="layer", autorange="reversed", type="category"),
        height=int(min(1400, 170 + 26 * n_layers)), margin=dict(l=10, r=10, t=110, b=10),
    )  # fmt: skip
    return fig
