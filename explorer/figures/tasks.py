"""Pictures of task results: pure builders from numbers and strings to Plotly figures or escaped HTML.

Every string from a user or a model (labels, tokens, sentences) is text: plotly renders a subset of HTML
in labels and hover text, so each is passed through `html.escape`; the HTML builders escape every piece
of text they place.
"""

from __future__ import annotations

import html
from typing import Sequence

import plotly.graph_objects as go

PALETTE = ["#fdd835", "#81d4fa", "#a5d6a7", "#ffab91", "#ce93d8", "#b0bec5", "#ffe082", "#80cbc4"]
FONT = "system-ui, sans-serif"


def esc(text: object, limit: int | None = None) -> str:
    """Escaped text for plotly, cut to `limit` characters with an ellipsis."""
    s = str(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": esc(title), "x": 0, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 20, "t": 50, "b": 40},
        font={"family": FONT},
        plot_bgcolor="white",
    )
    return fig


def label_bars(labels: Sequence[str], scores: Sequence[float], title: str, score_name: str) -> go.Figure:
    """Horizontal bars, best label on top. `scores` as the model gave them (probabilities or cosines)."""
    names = [f"{esc(label, 60)}" for label in labels]
    fig = go.Figure(
        go.Bar(
            x=list(scores),
            y=names,
            orientation="h",
            marker_color="#1f77b4",
            text=[f"{s:.3f}" for s in scores],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title=esc(score_name), gridcolor="#eee", zeroline=True, zerolinecolor="#999")
    if scores and min(scores) >= 0 and max(scores) <= 1:
        fig.update_xaxes(range=[0, 1.12])
    return _layout(fig, title, 90 + 32 * len(labels))


def fill_mask_bars(candidates: Sequence[dict], title: str) -> go.Figure:
    """The candidates for one mask (each {token_str, score}), as bars of probability."""
    labels = [f"{i + 1}. {c['token_str']}" for i, c in enumerate(candidates)]  # numbered: tokens may repeat
    return label_bars(
        labels, [c["score"] for c in candidates], title, "probability (softmax over the vocabulary)"
    )


def similarity_heatmap(sentences: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> go.Figure:
    """The (n, n) cosine-similarity matrix, sentences numbered on both axes."""
    names = [f"{i + 1}. {esc(s, 40)}" for i, s in enumerate(sentences)]
    full = [esc(s, 300) for s in sentences]
    hover = [
        [f"{full[i]}<br>{full[j]}<br>cosine {matrix[i][j]:.4f}" for j in range(len(names))]
        for i in range(len(names))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in matrix],
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=[[f"{v:.2f}" for v in row] for row in matrix],
            texttemplate="%{text}",
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
            colorbar={"title": {"text": "cosine"}},
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-30)
    size = 160 + 48 * len(names)
    return _layout(fig, title, max(size, 320))


def search_bars(ranking: Sequence[dict], title: str, top: int = 20) -> go.Figure:
    """The best `top` documents for a query, ranked by cosine similarity."""
    shown = list(ranking)[:top]
    return label_bars(
        [f"{r['rank']}. {r['document']}" for r in shown],
        [r["score"] for r in shown],
        title,
        "cosine similarity",
    )


def qa_token_scores(
    tokens: Sequence[str],
    start_probs: Sequence[float],
    end_probs: Sequence[float],
    start_token: int,
    end_token: int,
    title: str,
) -> go.Figure:
    """Start and end probabilities over the context tokens (pos,), the chosen span shaded."""
    x = list(range(len(tokens)))
    ticks = [esc(t, 16) for t in tokens]
    fig = go.Figure()
    fig.add_vrect(x0=start_token - 0.5, x1=end_token + 0.5, fillcolor="#fdd835", opacity=0.3, line_width=0)
    for name, probs, color in (("start", start_probs, "#2ca02c"), ("end", end_probs, "#d62728")):
        hover = "%{customdata}: " + name + " %{y:.4f}<extra></extra>"
        fig.add_trace(
            go.Bar(x=x, y=list(probs), name=name, marker_color=color, customdata=ticks, hovertemplate=hover)
        )
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=ticks, tickangle=-60)
    fig.update_yaxes(title="probability over the context tokens", range=[0, 1.05], gridcolor="#eee")
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.1, "x": 1, "xanchor": "right"})
    return _layout(fig, title, 380)


def feature_heatmap(tokens: Sequence[str], vectors: Sequence[Sequence[float]], title: str) -> go.Figure:
    """The last hidden state as a (pos, d_model) heatmap, one row per token."""
    names = [f"{i}: {esc(t, 16)}" for i, t in enumerate(tokens)]
    peak = max((abs(v) for row in vectors for v in row), default=1.0) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=[list(r) for r in vectors],
            y=names,
            zmin=-peak,
            zmax=peak,
            colorscale="RdBu",
            reversescale=True,
            hovertemplate="%{y}, dim %{x}: %{z:.4f}<extra></extra>",
            colorbar={"title": {"text": "value"}},
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="d_model dimension")
    return _layout(fig, title, 120 + 22 * min(len(names), 40))


def _mark(text: str, label: str, color: str, score: float | None) -> str:
    tag = html.escape(label) + (f" {score:.2f}" if score is not None else "")
    return (
        f'<mark style="background:{color};padding:1px 3px;border-radius:4px">{html.escape(text)}'
        f'<sup style="font-size:0.7em;margin-left:3px;font-weight:600">{tag}</sup></mark>'
    )


def entity_html(text: str, entities: Sequence[dict]) -> str:
    """`text` with each entity ({label, score, start, end}, character offsets) marked in a color per label;
    everything escaped. Overlapping or offset-less entities are skipped."""
    labels = sorted({e["label"] for e in entities})
    colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    parts, pos = [], 0
    for e in sorted(entities, key=lambda e: e.get("start") or 0):
        start, end = e.get("start"), e.get("end")
        if start is None or end is None or start < pos or end <= start:
            continue
        parts.append(html.escape(text[pos:start]))
        parts.append(_mark(text[start:end], e["label"], colors[e["label"]], e.get("score")))
        pos = end
    parts.append(html.escape(text[pos:]))
    return _box("".join(parts))


def span_html(text: str, start: int, end: int, label: str, score: float) -> str:
    """`text` with the span [start, end) marked (a QA answer in its context); everything escaped."""
    inner = (
        html.escape(text[:start]) + _mark(text[start:end], label, PALETTE[0], score) + html.escape(text[end:])
    )
    return _box(inner)


def _box(inner: str) -> str:
    return (
        '<div style="line-height:2.1;font-size:1.05rem;white-space:pre-wrap;border:1px solid #ddd;'
        f'border-radius:6px;padding:10px 12px">{inner}</div>'
    )
