"""The information-flow graph as a Plotly figure: tokens along the bottom, layers going up.

Each position has a node per level (the residual stream entering each sub-layer, and the stream after the
last layer). Grey vertical lines are residual edges, blue lines attention edges (from the source position
one level down), purple lines cross-attention edges from the encoder's tokens (drawn as a second row
below, to the left), orange squares the FFN marks. A parallel block's level between its two sub-layers is
the block's input plus attention's update (see explorer.analyses.flow). Width and opacity grow with
importance.
Every edge has an invisible marker at its middle that carries its key (`customdata`), so a click on an
edge selects it (Streamlit's selection events), and its hover text with the exact numbers. All token text
is escaped.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.analyses.flow import Edge, Flow, Routes, level_of
from explorer.web.display import plotly_text

COLORS = {"residual": "#94a3b8", "attention": "#2563eb", "cross": "#9333ea", "ffn": "#ea580c"}
SELECTED = "#dc2626"
BINS = 5  # edges are drawn in this many width / opacity steps (one trace each)
SELF_OFFSET = 0.2  # an attention edge from a position to itself runs beside its residual edge
FFN_OFFSET = -0.22
ENCODER_GAP = 1.5  # between the encoder's row and the decoder's tokens


def _x(flow: Flow, pos: int) -> float:
    """The x of a decoder (or only) position; encoder positions sit at 0 .. src-1 to its left."""
    return pos + (len(flow.source_ids) + ENCODER_GAP if flow.source_ids is not None else 0)


def _encoder_y() -> float:
    return -1.5


def segment(flow: Flow, e: Edge) -> tuple[tuple[float, float], tuple[float, float]]:
    """The two end points of an edge: (x0, y0) at its source, (x1, y1) at its target."""
    k = flow.sublayers.index(e.sublayer)
    lvl = level_of(flow, e.layer, k)
    x1 = _x(flow, e.tgt)
    if e.kind == "cross":
        return (float(e.src), _encoder_y()), (x1, lvl + 1)
    if e.kind == "ffn":
        return (x1 + FFN_OFFSET, lvl + 0.5), (x1, lvl + 1)
    x0 = _x(flow, e.src)
    if e.kind == "attention" and e.src == e.tgt:
        return (x0 + SELF_OFFSET, lvl), (x1 + SELF_OFFSET, lvl + 1)
    return (x0, lvl), (x1, lvl + 1)


def _name(flow: Flow, pos: int, encoder: bool = False) -> str:
    tokens = flow.source_tokens if encoder else flow.tokens
    return f"{pos} {plotly_text(repr(tokens[pos]))}"


def edge_text(flow: Flow, e: Edge, top_heads: int = 4) -> str:
    """Hover text with the exact numbers (HTML, token text escaped)."""
    where = f"layer {e.layer}, {e.sublayer}"
    if e.kind == "residual":
        return f"{where}<br>residual at {_name(flow, e.tgt)}<br>importance {e.importance:.4f}"
    if e.kind == "ffn":
        at = _name(flow, e.tgt)
        reads = "<br>(parallel block: the FFN read the block's input)" if flow.parallel else ""
        return f"{where}<br>FFN output at {at}{reads}<br>importance {e.importance:.4f}<br>click: top neurons"
    heads = flow.heads[e.sublayer][e.layer, :, e.tgt, e.src]
    weights = flow.weights[e.sublayer][e.layer, :, e.tgt, e.src]
    order = np.argsort(-heads)[:top_heads]
    lines = "<br>".join(f"head {h}: {heads[h]:.4f} (attention {weights[h]:.3f})" for h in order)
    src = _name(flow, e.src, encoder=e.kind == "cross")
    what = "encoder " if e.kind == "cross" else ""
    return f"{where}<br>{what}{src} → {_name(flow, e.tgt)}<br>importance {e.importance:.4f}<br>{lines}"


def node_text(flow: Flow, level: int, pos: int, lens: dict | None) -> str:
    n_sub = len(flow.sublayers)
    layer, k = divmod(level, n_sub)
    if layer == flow.n_layers:
        where = "output of the last layer"
    elif k == 0:
        where = f"stream entering layer {layer}"
    elif flow.parallel:  # the two sub-layers of a parallel block are steps of one sum
        where = f"layer {layer}, the block's input + {' + '.join(flow.sublayers[:k])}"
    else:
        where = f"layer {layer}, after {flow.sublayers[k - 1]}"
    text = f"{_name(flow, pos)}<br>{where}"
    tops = (lens or {}).get((layer, pos)) if k == 0 else None
    if tops:
        text += "<br>logit lens: " + ", ".join(f"{plotly_text(repr(t))} {p:.3f}" for t, p in tops)
    return text


def graph(
    flow: Flow,
    routes: Routes,
    lens: dict | None = None,
    selected: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """The routes as a figure. `lens`: {(boundary, pos): [(token, prob)]} for node hover; `selected`: an
    edge key drawn highlighted."""
    fig = go.Figure()
    n_sub = len(flow.sublayers)
    top = flow.n_layers * n_sub
    by_group: dict[tuple[str, int], list] = {}
    for e in routes.edges:
        if e.kind == "ffn":
            continue
        b = min(BINS - 1, int(e.importance * BINS))
        by_group.setdefault((e.kind, b), []).append(e)
    for (kind, b), group in sorted(by_group.items()):
        xs, ys = [], []
        for e in group:
            (x0, y0), (x1, y1) = segment(flow, e)
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        level = (b + 0.5) / BINS
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False, opacity=0.3 + 0.7 * level,
                line={"color": COLORS[kind], "width": 0.8 + 6 * level}, name=f"{kind} {b}",
            )
        )  # fmt: skip
    # nodes: the stream between blocks (the stream between sub-layers is where the lines meet)
    nodes = sorted((lv, p) for lv, p in routes.nodes if lv % n_sub == 0)
    fig.add_trace(
        go.Scatter(
            x=[_x(flow, p) for _, p in nodes], y=[lv for lv, _ in nodes], mode="markers",
            marker={"size": 4, "color": "#334155"}, hoverinfo="text",
            hovertext=[node_text(flow, lv, p, lens) for lv, p in nodes], name="nodes", showlegend=False,
        )
    )  # fmt: skip
    if flow.source_ids is not None:
        src = sorted(routes.sources)
        fig.add_trace(
            go.Scatter(
                x=[float(s) for s in src], y=[_encoder_y()] * len(src), mode="markers",
                marker={"size": 8, "color": COLORS["cross"], "symbol": "diamond"}, hoverinfo="text",
                hovertext=[f"encoder output at {_name(flow, s, True)}" for s in src], showlegend=False,
                name="encoder",
            )
        )  # fmt: skip
    # FFN marks (clickable themselves)
    marks = [e for e in routes.edges if e.kind == "ffn"]
    fig.add_trace(
        go.Scatter(
            x=[segment(flow, e)[0][0] for e in marks], y=[segment(flow, e)[0][1] for e in marks],
            mode="markers", name="ffn", showlegend=False,
            marker={"symbol": "square", "color": COLORS["ffn"], "line": {"width": 0},
                    "size": [6 + 12 * e.importance for e in marks]},
            customdata=[e.key for e in marks], hoverinfo="text",
            hovertext=[edge_text(flow, e) for e in marks],
        )
    )  # fmt: skip
    # an invisible marker in the middle of each line edge, for hover and clicks
    lines = [e for e in routes.edges if e.kind != "ffn"]
    mids = [segment(flow, e) for e in lines]
    fig.add_trace(
        go.Scatter(
            x=[(a[0] + b[0]) / 2 for a, b in mids], y=[(a[1] + b[1]) / 2 for a, b in mids], mode="markers",
            marker={"size": 10, "color": "rgba(0,0,0,0.01)"}, customdata=[e.key for e in lines],
            hoverinfo="text", hovertext=[edge_text(flow, e) for e in lines], name="edges", showlegend=False,
        )
    )  # fmt: skip
    chosen = next((e for e in routes.edges if e.key == selected), None)
    if chosen is not None:
        (x0, y0), (x1, y1) = segment(flow, chosen)
        fig.add_trace(
            go.Scatter(
                x=[x0, x1], y=[y0, y1], mode="lines+markers", hoverinfo="skip", showlegend=False,
                line={"color": SELECTED, "width": 4}, marker={"size": 9, "color": SELECTED}, name="selected",
            )
        )  # fmt: skip
    if flow.source_ids is not None:
        fig.add_annotation(
            x=(len(flow.source_ids) - 1) / 2, y=_encoder_y() - 0.5, showarrow=False,
            text="encoder output (cross-attention sources)", font={"size": 11, "color": COLORS["cross"]},
        )  # fmt: skip
    ticks_x = [_x(flow, p) for p in range(flow.n_pos)]
    labels = [plotly_text(f"{t}") for t in flow.tokens]
    if flow.source_ids is not None:
        ticks_x = list(range(len(flow.source_ids))) + ticks_x
        labels = [plotly_text(f"{t}") for t in flow.source_tokens] + labels
    step = max(1, flow.n_layers // 15)
    y_ticks = [level_of(flow, layer, 0) for layer in range(0, flow.n_layers, step)] + [top]
    y_labels = [f"layer {layer}" for layer in range(0, flow.n_layers, step)] + ["output"]
    fig.update_layout(
        height=height or int(min(1500, max(480, 160 + 13 * top))),
        margin={"l": 60, "r": 20, "t": 40, "b": 90},
        plot_bgcolor="white",
        hovermode="closest",
        hoverlabel={"bgcolor": "white", "bordercolor": "#94a3b8", "font": {"color": "#0f172a", "size": 12}},
        clickmode="event+select",
        dragmode=False,
        title={"text": f"Routes to {_name(flow, routes.position)} at threshold {routes.threshold:g}",
               "font": {"size": 14}},
        xaxis={"tickmode": "array", "tickvals": ticks_x, "ticktext": labels, "tickangle": -45,
               "showgrid": False, "zeroline": False, "fixedrange": True,
               "range": [-0.7, max(ticks_x) + 0.7]},
        yaxis={"tickmode": "array", "tickvals": y_ticks, "ticktext": y_labels, "showgrid": True,
               "gridcolor": "#f1f5f9", "zeroline": False, "fixedrange": True,
               "range": [(_encoder_y() - 0.5 if flow.source_ids is not None else 0) - 0.8, top + 0.8]},
    )  # fmt: skip
    return fig
