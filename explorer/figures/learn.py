"""Plot builders for the learning pages (attention from scratch, positions, FFN memory): pure functions
from arrays and token strings to Plotly figures. Token strings are text: escaped before Plotly sees them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.web.display import plotly_text

INK = "#0f172a"


def _labels(labels: Sequence[str] | None, n: int) -> tuple[list[int], list[str]]:
    """Numeric positions with text ticks: repeated tokens would collapse on a categorical axis."""
    if labels is None:
        return list(range(n)), [str(i) for i in range(n)]
    return list(range(n)), [f"{plotly_text(t)} ·{i}" for i, t in enumerate(labels)]


def heatmap(
    values: np.ndarray,
    title: str,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    row_title: str = "",
    col_title: str = "",
    colorscale: str = "RdBu",
    symmetric: bool = True,
    height: int | None = None,
    x_values: Sequence[float] | None = None,
    zrange: tuple[float, float] | None = None,
) -> go.Figure:
    """A (rows, cols) heatmap; `rows`/`cols` are token strings (None: numbered dimensions). NaN cells
    (masked positions) stay blank. `symmetric` centres a diverging scale on zero; `zrange` fixes the colour
    scale's ends instead. `x_values` puts the columns on a numeric axis instead (relative distances)."""
    values = np.asarray(values, dtype=np.float32)
    n_rows, n_cols = values.shape
    # Token axes are categories named "token ·position" (unique, so repeated tokens keep their own row);
    # the names travel once per axis, the hover reads them from there.
    y = _labels(rows, n_rows)[1] if rows is not None else list(range(n_rows))
    x = _labels(cols, n_cols)[1] if cols is not None else list(range(n_cols))
    if x_values is not None:
        x = list(x_values)
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    extra = dict(zmid=0.0, zmin=-bound, zmax=bound) if symmetric else {}
    if zrange is not None:
        extra = dict(zmin=zrange[0], zmax=zrange[1])
    fig = go.Figure(
        go.Heatmap(
            z=values, x=x, y=y, colorscale=colorscale,
            hovertemplate=f"{plotly_text(row_title)} %{{y}}<br>{plotly_text(col_title)} %{{x}}"
            "<br>%{z:.5g}<extra></extra>",
            **extra,
        )
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", title=row_title, type="category" if rows is not None else "linear")
    fig.update_xaxes(
        title=col_title, type="category" if cols is not None and x_values is None else "linear",
        tickangle=-60 if cols is not None and x_values is None else 0,
    )  # fmt: skip
    if height is None:
        height = int(min(900, max(260, 120 + 16 * n_rows)))
    fig.update_layout(
        title=dict(text=plotly_text(title), x=0.01), height=height, margin=dict(l=10, r=10, t=40, b=10),
        plot_bgcolor="white",
    )  # fmt: skip
    return fig


def lines(
    x: np.ndarray, series: dict[str, np.ndarray], title: str, x_title: str, y_title: str, height: int = 360
) -> go.Figure:
    fig = go.Figure()
    for name, y in series.items():
        fig.add_trace(go.Scatter(x=np.asarray(x), y=np.asarray(y), mode="lines", name=plotly_text(name)))
    fig.update_layout(
        title=dict(text=plotly_text(title), x=0.01), height=height, margin=dict(l=10, r=10, t=40, b=10),
        xaxis_title=x_title, yaxis_title=y_title, plot_bgcolor="white",
    )  # fmt: skip
    return fig


def bars(
    labels: Sequence[str], values: Sequence[float], title: str, x_title: str, hover: Sequence[str]
) -> go.Figure:
    """Horizontal bars, first label at the top; `hover` is plain text per bar (escaped here)."""
    fig = go.Figure(
        go.Bar(
            x=list(values)[::-1], y=[plotly_text(s) for s in labels][::-1], orientation="h",
            marker_color=["#16a34a" if v >= 0 else "#dc2626" for v in list(values)[::-1]],
            hovertext=[plotly_text(h) for h in hover][::-1], hoverinfo="text",
        )
    )  # fmt: skip
    fig.update_layout(
        title=dict(text=plotly_text(title), x=0.01), height=120 + 24 * len(labels),
        margin=dict(l=10, r=10, t=40, b=10), xaxis_title=x_title, plot_bgcolor="white",
    )  # fmt: skip
    return fig


def stacked_shares(attn: np.ndarray, ffn: np.ndarray, title: str) -> go.Figure:
    """Per layer: the norm of what attention and what the FFN add to the residual, as shares of their sum."""
    total = attn + ffn
    layers = list(range(len(attn)))
    fig = go.Figure()
    for name, part, color in (("attention", attn, "#e11d48"), ("feed-forward", ffn, "#16a34a")):
        fig.add_trace(
            go.Bar(
                x=layers, y=part / np.where(total > 0, total, 1), name=name, marker_color=color,
                customdata=part, hovertemplate=f"layer %{{x}}: {name} %{{y:.1%}} (norm %{{customdata:.4g}})"
                "<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        barmode="stack", title=dict(text=plotly_text(title), x=0.01), height=360,
        margin=dict(l=10, r=10, t=40, b=10), xaxis_title="layer",
        yaxis=dict(title="share of the update", tickformat=".0%"), plot_bgcolor="white",
    )  # fmt: skip
    return fig
