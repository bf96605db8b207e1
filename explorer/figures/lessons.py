"""Figures only the lessons draw: the three families' masks side by side, measured times, grouped bars."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.web.display import plotly_text


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=plotly_text(title), x=0.01), height=height, margin=dict(l=10, r=10, t=50, b=10),
        plot_bgcolor="white",
    )  # fmt: skip
    return fig


def family_masks(n_src: int, n_tgt: int) -> go.Figure:
    """Which key each query may read, in the three families: an encoder (every position), a decoder
    (itself and earlier ones), and an encoder-decoder's cross-attention (every source position)."""
    panels = [
        ("Encoder: bidirectional", np.ones((n_src, n_src)), "source position"),
        ("Decoder: causal mask", np.tril(np.ones((n_tgt, n_tgt))), "target position"),
        ("Cross-attention: target reads source", np.ones((n_tgt, n_src)), "source position"),
    ]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.06)
    for i, (_, allowed, x_title) in enumerate(panels, 1):
        fig.add_trace(
            go.Heatmap(z=allowed, colorscale=[[0, "#ffffff"], [1, "#2563eb"]], showscale=False, zmin=0,
                       zmax=1, xgap=1, ygap=1, hovertemplate="query %{y} → key %{x}: %{z}<extra></extra>"),
            row=1, col=i,
        )  # fmt: skip
        fig.update_xaxes(title_text=x_title, row=1, col=i)
        fig.update_yaxes(autorange="reversed", title_text="query" if i == 1 else None, row=1, col=i)
    return _layout(fig, "Where each query may look (blue: allowed)", 320)


def step_times(series: dict[str, Sequence[float]], title: str) -> go.Figure:
    """Milliseconds per generation step, one line per way of generating."""
    fig = go.Figure()
    for name, seconds in series.items():
        ms = np.asarray(seconds) * 1000
        fig.add_trace(go.Scatter(x=np.arange(len(ms)), y=ms, mode="lines+markers", name=plotly_text(name)))
    fig.update_xaxes(title_text="step (0: reading the prompt and choosing the first token)")
    fig.update_yaxes(title_text="milliseconds", rangemode="tozero")
    return _layout(fig, title, 340)


def growth_times(
    series: dict[str, tuple[Sequence[int], Sequence[float]]], squared: str, title: str
) -> go.Figure:
    """Measured milliseconds against the length, one line per measurement (name -> (lengths, seconds)),
    on log axes, with an n² line through the first point of `squared` for comparison."""
    fig = go.Figure()
    for name, (lengths, seconds) in series.items():
        fig.add_trace(go.Scatter(x=list(lengths), y=np.asarray(seconds) * 1000, mode="lines+markers",
                                 name=plotly_text(name)))  # fmt: skip
    n, t = (np.asarray(a, dtype=float) for a in series[squared])
    fig.add_trace(go.Scatter(x=n, y=t[0] * 1000 * (n / n[0]) ** 2, mode="lines", line=dict(dash="dot"),
                             name="n², for comparison"))  # fmt: skip
    fig.update_xaxes(title_text="tokens", type="log")
    fig.update_yaxes(title_text="milliseconds", type="log")
    return _layout(fig, title, 360)


def grouped_bars(
    labels: Sequence[str], groups: dict[str, Sequence[float]], title: str, y_title: str
) -> go.Figure:
    """Vertical bars per label, one colour per group (token labels are escaped here)."""
    fig = go.Figure()
    for name, values in groups.items():
        fig.add_trace(go.Bar(x=[plotly_text(s) for s in labels], y=list(values), name=plotly_text(name)))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=y_title)
    return _layout(fig, title, 360)
