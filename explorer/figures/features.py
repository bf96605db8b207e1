"""Figures of the Features page (explorer.sae): a feature's activation histogram, and its top contexts as
HTML with each token shaded by the feature's activation. Token strings are text: escaped here."""

from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np
import plotly.graph_objects as go


def histogram(counts: np.ndarray, top: float, title: str) -> go.Figure:
    """Bars of `counts` over equal bins from 0 to `top`."""
    edges = np.linspace(0, top, len(counts) + 1)
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges)))
    fig.update_layout(title=dict(text=escape(title), x=0.01), xaxis_title="activation", yaxis_title="tokens",
                      height=260, margin=dict(l=40, r=20, t=40, b=40))  # fmt: skip
    return fig


def contexts_html(contexts: Sequence[tuple[Sequence[str], Sequence[float], float]]) -> str:
    """One line per context: its top activation, then its tokens, each shaded by its activation over the
    top one (the number in the token's title)."""
    lines = []
    for tokens, values, best in contexts:
        cells = "".join(
            f'<span title="{v:.3f}" style="background: rgba(234, 88, 12, {min(max(v / best, 0), 1):.2f}); '
            f'padding: 1px 0">{escape(t)}</span>'
            for t, v in zip(tokens, values)
        )
        lines.append(f'<div style="font-family: monospace; white-space: pre; overflow-x: auto">'
                     f"<b>{best:.2f}</b>  {cells}</div>")  # fmt: skip
    return "".join(lines)
