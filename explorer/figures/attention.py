"""Plotly figures of attention: one map large, every head as a grid of thumbnails, layer x head
statistics. Pure functions from arrays and token lists to figures.

Token strings and titles reach Plotly escaped (`plotly_text`): Plotly renders a subset of HTML in titles,
tick labels and hover text, and a token is text.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from explorer.analyses.attention import pool_max
from explorer.web.display import plotly_text

COLORSCALE = "Viridis"
LABEL_LIMIT = 80  # above this many tokens, axis labels are thinned by Plotly
GRID_HEIGHT_PX = 2000  # the all-heads grid aims at this height
GRID_CELL_MIN, GRID_CELL_MAX = 24, 96
GRID_GAP = 3


def labels(tokens: Sequence[str], start: int = 0) -> list[str]:
    """Unique, escaped category labels `i·token` (Plotly merges equal categories), numbered from `start`."""
    return [f"{i}·{plotly_text(t)}" for i, t in enumerate(tokens, start)]


def _axis(tokens: Sequence[str], cats: list[str], title: str) -> dict:
    axis = dict(title=title, type="category", categoryorder="array", categoryarray=cats)
    if len(tokens) <= LABEL_LIMIT:  # every token, without its index, when they fit
        # characters (the date normalizer: its </s> aside): upright and larger
        short = bool(tokens) and sorted(len(t) for t in tokens)[len(tokens) // 2] <= 2
        axis.update(
            tickmode="array", tickvals=cats, ticktext=[plotly_text(t) for t in tokens],
            tickfont_size=15 if short else 11,
        )  # fmt: skip
        if short:
            axis["tickangle"] = 0
    return axis


def token_heatmap(
    z: np.ndarray,
    queries: Sequence[str],
    keys: Sequence[str],
    title: str,
    value_name: str = "weight",
    window: int | None = None,
    q_offset: int = 0,
    k_offset: int = 0,
) -> go.Figure:
    """A [q, k] matrix with query tokens down the side and key tokens along the top; hover gives
    both tokens and the exact value. `window`: draw the edge of a sliding window. Offsets: the
    positions of the first query and key shown (for a window of a long text)."""
    n_q, n_k = z.shape
    qcats = [f"{q_offset + i}·{plotly_text(t)}" for i, t in enumerate(queries)]
    kcats = [f"{k_offset + i}·{plotly_text(t)}" for i, t in enumerate(keys)]
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(z, dtype=np.float32),
            x=kcats,
            y=qcats,
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=float(max(z.max(), 1e-9)),
            colorbar=dict(title=value_name, thickness=12),
            hovertemplate=f"query %{{y}}<br>key %{{x}}<br>{value_name} %{{z:.6f}}<extra></extra>",
        )
    )
    side = int(min(900, max(480, 16 * max(n_q, n_k) + 160)))
    fig.update_layout(
        title=dict(text=plotly_text(title), font_size=15, y=0.995, yanchor="top"),
        xaxis=dict({"tickangle": -60, **_axis(keys, kcats, "key (attended to)")}, side="top"),
        yaxis=dict(_axis(queries, qcats, "query (attending)"), autorange="reversed"),
        width=side + 120,
        height=side + 130,
        margin=dict(l=10, r=10, t=150, b=10),
    )
    if window is not None:
        # keys older than q - window + 1 are masked: the band's left edge, in category coordinates
        xs, ys = [], []
        for i in range(n_q):
            edge = q_offset + i - window + 1 - k_offset
            if 0 <= edge < n_k:
                xs.append(kcats[edge])
                ys.append(qcats[i])
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode="lines", line=dict(color="white", dash="dot", width=1),
                    name=f"sliding window {window}", hoverinfo="skip", showlegend=False,
                )
            )  # fmt: skip
    return fig


def layer_head_heatmap(
    values: np.ndarray,
    title: str,
    value_name: str,
    fmt: str = ".3f",
    layer_notes: Sequence[str] | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """A [layer, head] matrix: one cell per head, value written in the cell when there is room."""
    n_layers, n_heads = values.shape
    layer_cats = [
        f"L{i}" + (f" {plotly_text(layer_notes[i])}" if layer_notes and layer_notes[i] else "")
        for i in range(n_layers)
    ]
    text = None
    if n_layers * n_heads <= 400:
        text = [[format(float(v), fmt) for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(
            z=np.asarray(values, dtype=np.float32),
            x=[f"H{h}" for h in range(n_heads)],
            y=layer_cats,
            text=text,
            texttemplate="%{text}" if text else None,
            textfont_size=10,
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=zmax,
            colorbar=dict(title=value_name, thickness=12),
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{value_name} %{{z:{fmt}}}<extra></extra>",
        )
    )
    fig.update_layout(title=dict(text=plotly_text(title), font_size=15, y=0.995, yanchor="top"))
    return layer_head_axes(fig, n_layers, n_heads)


def layer_head_axes(fig: go.Figure, n_layers: int, n_heads: int) -> go.Figure:
    """Heads across the top, layer 0 at the top, a cell size that reads at any model's size."""
    fig.update_layout(
        xaxis=dict(title="head", side="top", type="category"),
        yaxis=dict(title="layer", autorange="reversed", type="category"),
        width=int(min(1100, max(560, 160 + 56 * n_heads))),
        height=int(min(1400, 170 + 26 * n_layers)),
        margin=dict(l=10, r=10, t=110, b=10),
    )
    return fig


def _colormap() -> np.ndarray:
    """The figure colour scale as a [256, 3] uint8 lookup table."""
    colors = sample_colorscale(COLORSCALE, np.linspace(0, 1, 256).tolist(), colortype="tuple")
    return (np.array(colors) * 255).round().astype(np.uint8)


def grid_block(n_layers: int, n_tokens: int) -> int:
    """How many tokens one thumbnail pixel covers (1: every token pair has its own pixels)."""
    return max(1, int(np.ceil(n_tokens / grid_cell(n_layers, n_tokens))))


def grid_cell(n_layers: int, n_tokens: int) -> int:
    """Pixels per thumbnail: the grid aims at GRID_HEIGHT_PX in all, within the min and max."""
    return int(np.clip(GRID_HEIGHT_PX // n_layers - GRID_GAP, GRID_CELL_MIN, GRID_CELL_MAX))


def grid_image(maps: np.ndarray, cell: int, scale: str = "map") -> tuple[np.ndarray, int]:
    """Every head of every layer as one RGB image [layer*(cell+gap), head*(cell+gap), 3] (uint8).

    Maps longer than `cell` tokens are max-pooled (each pixel is the largest weight of its block);
    shorter ones are enlarged. `scale`: "map" colours each thumbnail from 0 to its own largest weight,
    "sqrt" colours the square root of the weight on 0-1 (faint weights show), "linear" colours 0-1.
    Returns the image and the pooling block size."""
    n_layers, n_heads, n_q, n_k = maps.shape
    pooled, block = pool_max(maps, cell)
    if scale == "map":
        peak = pooled.max(axis=(-2, -1), keepdims=True)
        v = pooled / np.maximum(peak, 1e-12)
    elif scale == "sqrt":
        v = np.sqrt(np.clip(pooled, 0, 1))
    else:
        v = np.clip(pooled, 0, 1)
    idx = (v * 255).round().astype(np.uint8)
    ph, pw = idx.shape[-2:]
    ry, rx = max(1, cell // ph), max(1, cell // pw)
    idx = idx.repeat(ry, axis=-2).repeat(rx, axis=-1)  # small maps: square pixels per token
    ch, cw = idx.shape[-2:]
    step_y, step_x = cell + GRID_GAP, cell + GRID_GAP
    lut = _colormap()
    image = np.full((n_layers * step_y, n_heads * step_x, 3), 255, dtype=np.uint8)
    for layer in range(n_layers):
        for head in range(n_heads):
            y, x = layer * step_y, head * step_x
            image[y : y + ch, x : x + cw] = lut[idx[layer, head]]
    return image, block


def png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def heads_grid(
    maps: np.ndarray,
    title: str,
    scale: str = "map",
    windows: Sequence[int | None] | None = None,
) -> go.Figure:
    """All heads of all layers at once: one PNG of thumbnails (a few hundred KB at most, whatever the
    text length) with a transparent marker on each thumbnail for hover and click (its customdata is
    [layer, head])."""
    n_layers, n_heads, n_q, n_k = maps.shape
    cell = grid_cell(n_layers, max(n_q, n_k))
    image, block = grid_image(maps, cell, scale)
    step = cell + GRID_GAP
    fig = go.Figure(go.Image(source=png_data_uri(image), hoverinfo="skip"))
    cx = [h * step + cell / 2 for _ in range(n_layers) for h in range(n_heads)]
    cy = [layer * step + cell / 2 for layer in range(n_layers) for _ in range(n_heads)]
    custom = [[layer, h] for layer in range(n_layers) for h in range(n_heads)]
    notes = [
        f", sliding window {windows[layer]}" if windows and windows[layer] else ""
        for layer in range(n_layers)
    ]
    hover = [
        f"layer {layer}, head {h}{notes[layer]}<br>click to open"
        for layer in range(n_layers)
        for h in range(n_heads)
    ]
    fig.add_trace(
        go.Scatter(
            x=cx, y=cy, customdata=custom, mode="markers", hovertext=hover, hoverinfo="text",
            marker=dict(size=max(8, cell - 4), symbol="square", color="rgba(0,0,0,0)"), showlegend=False,
        )
    )  # fmt: skip
    pooled = (
        f"; each pixel is the largest weight in a block of {block}×{block} token pairs" if block > 1 else ""
    )
    fig.update_layout(
        title=dict(text=plotly_text(f"{title}{pooled}"), font_size=14),
        xaxis=dict(
            tickvals=[h * step + cell / 2 for h in range(n_heads)],
            ticktext=[f"H{h}" for h in range(n_heads)],
            side="top", showgrid=False, zeroline=False, range=[-0.5, image.shape[1] - 0.5],
        ),
        yaxis=dict(
            tickvals=[layer * step + cell / 2 for layer in range(n_layers)],
            ticktext=[f"L{i}" + ("·w" if windows and windows[i] else "") for i in range(n_layers)],
            showgrid=False, zeroline=False, range=[image.shape[0] - 0.5, -0.5],
        ),
        width=int(image.shape[1] + 70),
        height=int(image.shape[0] + 90),
        margin=dict(l=60, r=10, t=80, b=10),
        dragmode=False,
    )  # fmt: skip
    return fig


def top_attended_figure(
    top: list[list], keys: Sequence[str], query_label: str, windows: Sequence[int | None] | None = None
) -> go.Figure:
    """Per layer, the tokens a query attends to most (head-averaged), as a table-like heatmap with the
    token written in each cell and its weight as the colour."""
    n_layers, k = len(top), len(top[0]) if top else 0
    z = np.array([[a.weight for a in row] for row in top], dtype=np.float32)
    text = [[f"{plotly_text(keys[a.key])} ({a.key})" for a in row] for row in top]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"#{i + 1}" for i in range(k)], y=[f"L{i}" for i in range(n_layers)], text=text,
            texttemplate="%{text}", textfont_size=11, colorscale="Blues", zmin=0, zmax=1,
            colorbar=dict(title="mean weight", thickness=12),
            hovertemplate="layer %{y}, rank %{x}<br>%{text}<br>mean over heads %{z:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title=dict(
            text=f"What {plotly_text(query_label)} attends to most, per layer (mean over heads)", font_size=14
        ),
        yaxis=dict(autorange="reversed", type="category"),
        xaxis=dict(side="top", type="category"),
        width=620,
        height=int(min(1400, 120 + 26 * n_layers)),
        margin=dict(l=10, r=10, t=80, b=10),
    )
    return fig


def layer_position_heatmap(
    values: np.ndarray,
    tokens: Sequence[str],
    title: str,
    value_name: str,
    first_layer: int = 0,
    fmt: str = ".3f",
    colorscale: str = COLORSCALE,
    zmin: float | None = None,
    zmax: float | None = None,
    log: bool = False,
    first_position: int = 0,
) -> go.Figure:
    """A [layer, pos] matrix: layers down the side (first at the top), tokens along the top, numbered from
    `first_position`. `log`: colours by the value's logarithm (positive values, such as norms, whose
    largest cell would leave the others one colour); the hover still gives the value itself."""
    n_layers, n_pos = values.shape
    cats = labels(tokens, first_position)
    rows = [f"L{first_layer + i}" for i in range(n_layers)]
    z = np.asarray(values, dtype=np.float32)
    shown, extra = z, dict(colorbar=dict(title=value_name, thickness=12))
    hover = f"%{{y}}, token %{{x}}<br>{value_name} %{{z:{fmt}}}<extra></extra>"
    if log:
        positive = z[z > 0]
        shown = np.log10(np.maximum(z, positive.min() if positive.size else 1.0))
        ticks = np.arange(np.floor(shown.min()), np.ceil(shown.max()) + 1)
        extra = dict(
            customdata=z,
            colorbar=dict(title=f"{value_name} (log)", thickness=12, tickvals=ticks.tolist(),
                          ticktext=[f"{10.0**t:g}" for t in ticks]),
        )  # fmt: skip
        hover = f"%{{y}}, token %{{x}}<br>{value_name} %{{customdata:{fmt}}}<extra></extra>"
        zmin = zmax = None
    fig = go.Figure(
        go.Heatmap(
            z=shown, x=cats, y=rows, colorscale=colorscale, zmin=zmin, zmax=zmax, hovertemplate=hover,
            **extra,
        )
    )  # fmt: skip
    fig.update_layout(
        title=dict(text=plotly_text(title), font_size=15, y=0.995, yanchor="top"),  # above the axis title
        xaxis=dict({"tickangle": -60, **_axis(tokens, cats, "token")}, side="top"),
        yaxis=dict(title="layer", autorange="reversed", type="category"),
        width=int(min(1400, max(520, 200 + 22 * n_pos))),
        height=int(min(1400, 230 + 24 * n_layers)),
        margin=dict(l=10, r=10, t=160, b=10),
    )
    return fig


def logit_lens_figure(
    probs: np.ndarray,
    words: Sequence[Sequence[Sequence[str]]],
    tokens: Sequence[str],
    positions: Sequence[int],
) -> go.Figure:
    """The logit lens: at each layer (rows) and position (columns) the top predicted token written in
    the cell, coloured by its probability; hover lists the top five."""
    n_states = probs.shape[0]
    cats = [f"{p}·{plotly_text(tokens[p])}" for p in positions]
    rows = ["emb"] + [f"L{i}" for i in range(n_states - 1)]
    text = [[plotly_text(words[layer][i][0]) for i in range(len(positions))] for layer in range(n_states)]
    hover = [
        [
            "<br>".join(f"{plotly_text(w)}  {p:.4f}" for w, p in zip(words[layer][i], probs[layer, i]))
            for i in range(len(positions))
        ]
        for layer in range(n_states)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=probs[:, :, 0].astype(np.float32), x=cats, y=rows, text=text, customdata=hover,
            texttemplate="%{text}", textfont_size=10, colorscale="Blues", zmin=0, zmax=1,
            colorbar=dict(title="p(top)", thickness=12),
            hovertemplate="%{y}, after token %{x}<br>top predictions:<br>%{customdata}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        # the title at the top edge, the axis title below it (they overlapped on a narrow figure)
        title=dict(
            text="Logit lens: the next token each layer would predict", font_size=15, y=0.995, yanchor="top"
        ),
        xaxis=dict(
            title="position (predicting the token after it)", side="top", tickangle=-45, type="category"
        ),
        yaxis=dict(autorange="reversed", type="category"),
        width=int(min(1600, max(560, 140 + 90 * len(positions)))),
        height=int(min(1600, 230 + 24 * n_states)),
        margin=dict(l=10, r=10, t=170, b=10),
    )
    return fig
