"""The Attention page: every head of every layer, as heatmaps, statistics and bertviz's views."""

import numpy as np
import streamlit as st

from explorer import session
from explorer.analyses import heads
from explorer.analyses.attention import (
    SAME_SEQUENCE_ONLY,
    STATISTICS,
    focus,
    head_statistics,
    mean_over_heads,
    rollout,
    top_attended,
    uniform_entropy,
)
from explorer.errors import InputError
from explorer.figures.attention import (
    grid_block,
    heads_grid,
    layer_head_heatmap,
    token_heatmap,
    top_attended_figure,
)
from explorer.lessons.glossary import help_for
from explorer.models.devices import human_bytes
from explorer.runs.capture import AttentionSet, Capture
from explorer.runs.export import npz_bytes
from explorer.web.bertviz_view import bertviz_html, view_height
from explorer.web.display import md
from views.common import capture_page, choice, kept, share

VIEWS = ["One head", "All heads", "Mean and rollout", "Token focus", "Head statistics", "bertviz"]
FULL_MAP_LIMIT = 768  # longer texts show one window of the map at full detail
WINDOW = 512
DETECT_KIND, DETECT_SEED, DETECT_LENGTH = session.DETECT_KIND, session.DETECT_SEED, session.DETECT_LENGTH
DRAWN = "pattern"  # the head finder's choice of a pattern drawn on the workspace text
DETECT_LABELS = {**heads.DETECTORS, DRAWN: "Your own: a pattern you draw on the workspace text"}
GRID = 32  # the drawn pattern's grid shows the text's first tokens
GRID_VERSION = "detect_grid_version"  # a new grid widget when the grid is filled from a pattern
GRID_BASE, GRID_SHOWN = "detect_grid_base", "detect_grid_shown"  # what the grid began from; what it shows
DEFAULT_DRAWN = "two back"


def layer_label(s: AttentionSet, layer: int) -> str:
    window = s.windows[layer] if layer < len(s.windows) else None
    return f"{layer} (sliding window {window})" if window else str(layer)


def open_from_grid() -> None:
    """A click on a thumbnail of the grid opens that head large. The browser resends a chart's last
    selection with every rerun until it has dropped the chart, so a selection made on the grid can come
    back after another view was chosen (a click right after opening a head was undone): only a selection
    made while the grid is the view counts."""
    if st.session_state.get(session.ATTN_VIEW) != "All heads":
        return
    event = st.session_state.get(session.ATTN_GRID)
    points = event.selection.points if event is not None else []
    if points and points[0].get("customdata"):
        layer, head = points[0]["customdata"][:2]
        st.session_state[session.ATTN_LAYER] = int(layer)
        st.session_state[session.ATTN_HEAD] = int(head)
        st.session_state[session.ATTN_VIEW] = "One head"


def one_head(cap: Capture, s: AttentionSet, layer: int, head: int) -> None:
    z = s.maps[layer, head]
    n_q, n_k = z.shape
    q0 = k0 = 0
    if max(n_q, n_k) > FULL_MAP_LIMIT:
        st.info(
            f"{max(n_q, n_k)} tokens: the map is shown {WINDOW} positions at a time at full detail "
            "(the All heads grid shows the whole of every map)."
        )
        c1, c2 = st.columns(2)
        q0 = c1.number_input("First query position", 0, max(0, n_q - 1), max(0, n_q - WINDOW), step=64)
        k0 = c2.number_input("First key position", 0, max(0, n_k - 1), max(0, min(q0, n_k - WINDOW)), step=64)
        z = z[q0 : q0 + WINDOW, k0 : k0 + WINDOW]
    window = s.windows[layer] if s.same_sequence else None
    title = f"{s.title}: layer {layer}, head {head}" + (f" (sliding window {window})" if window else "")
    fig = session.figure(
        cap,
        ("one head", s.name, layer, head, q0, k0),
        lambda: token_heatmap(
            z,
            s.queries.tokens[q0 : q0 + z.shape[0]],
            s.keys.tokens[k0 : k0 + z.shape[1]],
            title,
            window=window if window and window < max(n_q, n_k) else None,
            q_offset=q0,
            k_offset=k0,
        ),
    )
    st.plotly_chart(fig, width="content", key="one_head")
    notes = ["Each row is one query's attention: its weights sum to 1."]
    if s.causal:
        notes.append("Causal: a token attends only to itself and earlier tokens (the upper triangle is 0).")
    if window:
        notes.append(f"This layer uses a sliding window: keys more than {window - 1} positions back get 0.")
    st.caption(" ".join(notes))


def all_heads(cap: Capture, s: AttentionSet) -> None:
    scale = kept(
        "radio",
        "Colour",
        session.ATTN_SCALE,
        "map",
        options=["map", "sqrt", "linear"],
        format_func={
            "map": "each map from 0 to its own largest weight",
            "sqrt": "square root of the weight (faint weights show)",
            "linear": "weight from 0 to 1",
        }.get,
        horizontal=True,
    )
    fig = session.figure(
        cap,
        ("all heads", s.name, scale),
        lambda: heads_grid(s.maps, f"{s.title}: {s.n_layers} layers × {s.n_heads} heads", scale, s.windows),
    )
    st.plotly_chart(
        fig,
        width="content",
        key=session.ATTN_GRID,
        on_select=open_from_grid,
        selection_mode="points",
        config={"displayModeBar": True},
    )
    block = grid_block(s.n_layers, max(len(s.queries), len(s.keys)))
    pooled = (
        f" Each pixel is the largest weight of {block}×{block} token pairs; open a head for all."
        if block > 1
        else ""
    )
    st.caption(
        "Click a thumbnail to open that head large. Rows are layers (·w: sliding window), columns heads."
        + pooled
    )


def mean_and_rollout(s: AttentionSet, layer: int) -> None:
    mean = mean_over_heads(s.maps[layer : layer + 1])[0]
    left, right = st.columns(2)
    left.plotly_chart(
        token_heatmap(mean, s.queries.tokens, s.keys.tokens, f"{s.title}: layer {layer}, mean over heads"),
        width="content",
        key="mean_map",
    )
    if not s.same_sequence:
        st.caption(
            "Rollout follows attention through the layers of one stack; cross-attention has no rollout."
        )
        return
    rolled = rollout(s.maps[: layer + 1])[-1]  # the layers above do not change it: not computed
    right.plotly_chart(
        token_heatmap(
            rolled,
            s.queries.tokens,
            s.keys.tokens,
            f"Attention rollout through layers 0–{layer}",
            value_name="rollout",
        ),
        width="content",
        key="rollout_map",
    )
    st.caption(
        "Rollout (Abnar and Zuidema, 2020): each layer's head-averaged map is mixed half and half with the "
        "identity (the residual connection), rows renormalized, and the layers multiplied in order: how much "
        "each position draws on each input token through every path up to this layer."
    )


def default_query(s: AttentionSet) -> int:
    words = [t.strip("␣").lower() for t in s.queries.tokens]
    return words.index("it") if "it" in words else len(words) - 1


def suggested_key(s: AttentionSet, query: int) -> int:
    """The position `query` attends to most (mean over layers and heads), itself and the first token
    aside (the first token soaks up attention in most models)."""
    mean = s.maps[:, :, query, :].mean(axis=(0, 1)).copy()
    if s.same_sequence:
        mean[query] = -1.0
    if len(mean) > 1:
        mean[0] = -1.0
    return int(np.argmax(mean))


def token_focus(s: AttentionSet, request) -> None:
    q_opts = list(range(len(s.queries)))
    k_opts = list(range(len(s.keys)))
    # Token positions chosen on another text or model mean other tokens here: a new text starts from the
    # suggested pair (a link's own choice is kept, and checked below).
    seen = (s.name, s.queries.ids, s.keys.ids)
    if st.session_state.get(session.PAIR_FOR) != seen:
        st.session_state[session.PAIR_FOR] = seen
        if not session.from_link(session.ATTN_QUERY):
            st.session_state[session.ATTN_QUERY] = default_query(s)
        if not session.from_link(session.ATTN_KEY):
            query = st.session_state[session.ATTN_QUERY]
            st.session_state[session.ATTN_KEY] = suggested_key(
                s, query if query in q_opts else default_query(s)
            )
    # The focused token the other pages share (FFN memory, Flow), when it was chosen on this very sequence
    # and has changed since this page last took it, becomes the query (with its suggested key).
    shared = (request, tuple(s.queries.tokens))
    focused = st.session_state.get(session.FOCUS)
    if (
        s.same_sequence
        and st.session_state.get(session.FOCUS_FOR) == shared
        and focused in q_opts
        and focused != st.session_state.get(session.PAIR_SYNCED)
        and not session.from_link(session.ATTN_QUERY)
    ):
        st.session_state[session.ATTN_QUERY] = focused
        st.session_state[session.ATTN_KEY] = suggested_key(s, focused)
    c1, c2 = st.columns(2)
    query = kept(
        "selectbox",
        "Query token (attending)",
        session.ATTN_QUERY,
        default_query(s),
        c1,
        options=q_opts,
        format_func=lambda i: f"{i}: {s.queries.tokens[i]}",
    )
    key = kept(
        "selectbox",
        "Key token (attended to)",
        session.ATTN_KEY,
        suggested_key(s, query),
        c2,
        options=k_opts,
        format_func=lambda i: f"{i}: {s.keys.tokens[i]}",
    )
    if s.same_sequence:  # the query is the focused token for the other pages too
        st.session_state[session.FOCUS], st.session_state[session.FOCUS_FOR] = query, shared
        st.session_state[session.PAIR_SYNCED] = query
    values = focus(s.maps, query, key)
    qt, kt = s.queries.tokens[query], s.keys.tokens[key]
    notes = [f"sliding {w}" if w else "" for w in s.windows]
    st.plotly_chart(
        layer_head_heatmap(
            values,
            f"How much “{qt}” ({query}) attends to “{kt}” ({key}), per head",
            "weight",
            layer_notes=notes,
            zmax=1.0,
        ),
        width="content",
        key="focus_map",
    )
    st.plotly_chart(
        top_attended_figure(top_attended(s.maps, query, 3), s.keys.tokens, f"“{qt}” ({query})"),
        width="content",
        key="top_attended",
    )


def find_heads(loaded, s: AttentionSet) -> None:
    """Every head scored for a pattern on a probe of random tokens repeated (explorer.analyses.heads), and
    one head opened on the probe."""
    st.subheader("Find heads by what they do", help=help_for("head"))
    c1, c2, c3 = st.columns([3, 1, 1])
    kind = kept("selectbox", "Pattern", DETECT_KIND, "induction", c1, options=list(DETECT_LABELS),
                format_func=DETECT_LABELS.get)  # fmt: skip
    if kind == DRAWN:
        drawn_pattern(s)
        return
    st.caption(
        "Each head is scored on a probe: random tokens, then the same tokens again. The score is the "
        "attention the pattern asks for, averaged over the positions where it applies (1: the head does "
        "nothing else)."
    )
    seed = kept("number_input", "Seed", DETECT_SEED, 0, c2, min_value=0, max_value=2**31 - 1)
    length = kept(
        "number_input", "Random tokens", DETECT_LENGTH, heads.DEFAULT_LENGTH, c3, min_value=2,
        max_value=1000, help="The probe is these tokens twice, after the start token if any.",
    )  # fmt: skip
    stack = {"self": None}.get(s.name, s.name)
    key = ("heads", loaded.request, kind, int(seed), int(length), stack)
    try:
        found = session.shared_run(
            loaded, key, "head detection", "Scoring every head on the probe …",
            lambda: heads.detect(loaded, kind, int(seed), int(length), stack),
        )  # fmt: skip
    except InputError as err:
        st.error(md(err))
        return
    notes = [f"sliding {w}" if w else "" for w in s.windows]
    st.plotly_chart(
        layer_head_heatmap(found.scores, heads.DETECTORS[kind], "score", layer_notes=notes, zmax=1.0),
        width="content", key="detect_map",
    )  # fmt: skip
    top = found.ranked()[:10]
    pick = st.selectbox(
        "Open a head on the probe (the ten highest scores)", range(len(top)),
        format_func=lambda i: f"layer {top[i]['layer']}, head {top[i]['head']}: {top[i]['score']:.3f}",
    )  # fmt: skip
    layer, head = top[pick]["layer"], top[pick]["head"]
    st.plotly_chart(
        token_heatmap(found.maps[layer, head], found.tokens, found.tokens,
                      f"Layer {layer}, head {head} on the probe ({len(found.ids)} tokens)"),
        key="detect_head",
    )  # fmt: skip


def drawn_pattern(s: AttentionSet) -> None:
    """The user's own pattern, ticked on a grid of the workspace text's tokens (queries as rows, keys as
    columns), and every head scored for it on the text's own attention maps (no new forward pass)."""
    n = len(s.queries)
    m = min(n, GRID)
    st.caption(
        "Tick, for each query (row), the keys (columns) that a head doing your pattern attends to. Every "
        "head is scored on the workspace text: the attention it puts on the ticked keys, averaged over the "
        "rows with a tick (1: the head does nothing else)."
        + (f" The grid holds the text's first {m} of {n} tokens; the rest are not scored." if n > m else "")
    )
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    rules = list(heads.RULES)
    start = c1.selectbox("Start the grid from", rules, index=rules.index(DEFAULT_DRAWN),
                         format_func=heads.RULES.get, key="detect_rule")  # fmt: skip
    cells = st.session_state.get(session.DETECT_CELLS)
    if c2.button("Fill the grid", key="detect_fill") or cells is None:
        cells = heads.format_cells(heads.rule(start, s.queries.ids[:m]) & _allowed(s, m))
    if cells != st.session_state.get(GRID_SHOWN):  # filled, or set by a link: a new grid starts from it
        st.session_state[GRID_BASE] = cells
        st.session_state[GRID_VERSION] = st.session_state.get(GRID_VERSION, 0) + 1
    try:
        want = heads.parse_cells(st.session_state[GRID_BASE], (n, n))[:m, :m]
    except InputError as err:  # a link's pattern for another text
        st.warning(f"The link's drawn pattern does not fit this text: {md(err)} The grid starts empty.")
        want = np.zeros((m, m), dtype=bool)
    import pandas as pd  # here: its import (0.3 s) would hold up every first picture of this page

    rows = [f"{i} {t}" for i, t in enumerate(s.queries.tokens[:m])]
    cols = [f"{i} {t}" for i, t in enumerate(s.keys.tokens[:m])]
    edited = st.data_editor(
        pd.DataFrame(want, index=rows, columns=cols),
        key=f"detect_grid_{st.session_state[GRID_VERSION]}",
        height=(m + 1) * 35 + 3,  # every row, no scrolling
        column_config={c: st.column_config.CheckboxColumn(c, width="small") for c in cols},
    )
    drawn = edited.to_numpy(dtype=bool, copy=True)
    if s.causal and (drawn & ~_allowed(s, m)).any():
        st.caption("Ticks right of the diagonal are left out: a causal model cannot attend to later keys.")
    drawn &= _allowed(s, m)
    st.session_state[session.DETECT_CELLS] = st.session_state[GRID_SHOWN] = heads.format_cells(drawn)
    if not drawn.any():
        st.info("Tick at least one cell to score the heads.")
        return
    pattern = np.zeros((n, n), dtype=bool)
    pattern[:m, :m] = drawn
    found = heads.scores(s.maps, s.queries.ids, "pattern", pattern)
    notes = [f"sliding {w}" if w else "" for w in s.windows]
    st.plotly_chart(
        layer_head_heatmap(found, f"Your pattern ({int(drawn.sum())} cells) on the workspace text", "score",
                           layer_notes=notes, zmax=1.0),
        width="content", key="drawn_map",
    )  # fmt: skip
    top = sorted(np.ndindex(*found.shape), key=lambda lh: -found[lh])[:10]
    pick = st.selectbox(
        "Open a head on the text (the ten highest scores)", range(len(top)),
        format_func=lambda i: f"layer {top[i][0]}, head {top[i][1]}: {found[top[i]]:.3f}",
    )  # fmt: skip
    layer, head = top[pick]
    tokens = s.queries.tokens[:m]
    c1, c2 = st.columns(2)
    c1.plotly_chart(token_heatmap(drawn.astype(float), tokens, tokens, "Your pattern"), key="drawn_pattern")
    c2.plotly_chart(
        token_heatmap(s.maps[layer, head, :m, :m], tokens, tokens, f"Layer {layer}, head {head}"),
        key="drawn_head",
    )


def _allowed(s: AttentionSet, m: int) -> np.ndarray:
    """The cells of the grid a head can attend to: all, or the causal triangle."""
    return np.tri(m, dtype=bool) if s.causal else np.ones((m, m), dtype=bool)


def head_stats(s: AttentionSet) -> None:
    names = [n for n in STATISTICS if s.same_sequence or n not in SAME_SEQUENCE_ONLY]
    name = kept("radio", "Statistic", session.ATTN_STAT, names[0], options=names, format_func=STATISTICS.get)
    values = head_statistics(s.maps, name)
    fmt = ".2f" if name in ("entropy", "distance") else ".3f"
    zmax = 1.0 if name not in ("entropy", "distance") else None
    notes = [f"sliding {w}" if w else "" for w in s.windows]
    st.plotly_chart(
        layer_head_heatmap(values, STATISTICS[name], name, fmt=fmt, layer_notes=notes, zmax=zmax),
        width="content",
        key="stats_map",
    )
    if name == "entropy":
        n_q, n_k = len(s.queries), len(s.keys)
        if not s.causal:
            st.caption(f"For reference: uniform attention over all {n_k} keys has {np.log2(n_k):.2f} bits.")
        else:
            refs = {w: uniform_entropy(n_q, n_k, True, w) for w in dict.fromkeys(s.windows)}
            text = (
                "; ".join(
                    f"{f'{w}-token sliding-window layers' if w else 'full layers'} {bits:.2f} bits"
                    for w, bits in refs.items()
                )
                if len(set(refs.values())) > 1
                else f"{next(iter(refs.values())):.2f} bits"
            )
            st.caption(
                "For reference: attention spread evenly over the keys each query may read (under the "
                "causal mask query i reads the i + 1 keys up to itself), averaged over the queries: "
                f"{text}."
            )


def bertviz_views(cap: Capture, layer: int, kind: str) -> None:
    """bertviz's views of every attention kind, opened on `kind`, the one chosen on the page."""
    sets = cap.attention_sets()
    view = kept(
        "radio",
        "bertviz view",
        session.BERTVIZ_VIEW,
        "head",
        options=["head", "model"],
        format_func={
            "head": "Head view (one layer, heads as colours)",
            "model": "Model view (every head)",
        }.get,
        horizontal=True,
    )
    n_layers = min(s.n_layers for s in sets)
    if view == "head":
        default = [min(layer, n_layers - 1)]
    else:
        default = list(range(min(4, n_layers)))
    chosen = kept(
        "multiselect",
        "Layers to include (fewer layers, smaller page)",
        f"{session.BERTVIZ_LAYERS}_{view}",
        default,
        options=list(range(n_layers)),
    )
    if not chosen:
        st.info("Choose at least one layer.")
        return
    try:
        first = [x.name for x in sets].index(kind)
        html = bertviz_html(sets, view, sorted(chosen), first=first)
    except InputError as err:
        st.warning(md(err))
        return
    st.caption(
        f"bertviz {view} view, drawn by bertviz's own code from this capture "
        f"({human_bytes(len(html.encode()))}, "
        "weights rounded to 3 decimals). Hover a token to see its attention; double-click a head colour to "
        "show only that head."
    )
    st.iframe(html, height=view_height(sets, view, len(chosen)))


PER_VIEW = {
    "All heads": (session.ATTN_SCALE,),
    "Token focus": (session.ATTN_QUERY, session.ATTN_KEY),
    "Head statistics": (session.ATTN_STAT, DETECT_KIND, DETECT_SEED, DETECT_LENGTH, session.DETECT_CELLS),
    "bertviz": (session.BERTVIZ_VIEW,),
}


def link_keys(view: str) -> tuple[str, ...]:
    """The session keys a link to this view carries."""
    return (session.TEXT, session.TARGET, session.ATTN_KIND, session.ATTN_VIEW, session.ATTN_LAYER,
            session.ATTN_HEAD, *PER_VIEW.get(view, ()))  # fmt: skip


def main() -> None:
    st.title("Attention")
    found = capture_page("attention")
    if found is None:
        return
    loaded, cap = found
    sets = cap.attention_sets()
    if len(sets) > 1:
        kind = kept(
            "segmented_control",
            "Attention",
            session.ATTN_KIND,
            "cross",
            options=[x.name for x in sets],
            format_func=lambda n: cap.attention_set(n).title,
            required=True,
        )
        s = cap.attention_set(kind or "cross")
    else:
        s = sets[0]
    view = (
        kept("segmented_control", "View", session.ATTN_VIEW, VIEWS[0], options=VIEWS, required=True)
        or VIEWS[0]
    )
    layer = head = 0
    if view in ("One head", "Mean and rollout"):
        c1, c2, _ = st.columns([2, 1, 3])
        layer = kept(
            "selectbox",
            "Layer",
            session.ATTN_LAYER,
            0,
            c1,
            options=list(range(s.n_layers)),
            format_func=lambda i: layer_label(s, i),
            help=help_for("layer"),
        )
        if view == "One head":
            head = kept(
                "selectbox",
                "Head",
                session.ATTN_HEAD,
                0,
                c2,
                options=list(range(s.n_heads)),
                help=help_for("head", "attention map"),
            )
    # The address bar is written before the picture is drawn: whenever a user (or a test) sees the
    # picture, the link they copy already opens it.
    share(*link_keys(view))
    if view == "One head":
        one_head(cap, s, layer, head)
    elif view == "All heads":
        all_heads(cap, s)
    elif view == "Mean and rollout":
        mean_and_rollout(s, layer)
    elif view == "Token focus":
        token_focus(s, loaded.request)
    elif view == "Head statistics":
        head_stats(s)
        if s.same_sequence:
            find_heads(session.live(loaded), s)
    else:
        bertviz_views(cap, choice(session.ATTN_LAYER, range(s.n_layers), 0), s.name)
    # once more: a view's own widgets (drawn inside it) may have just set their first value
    session.write_link(link_keys(view))
    st.download_button(
        "Download the capture (.npz: tokens, attentions, hidden states)",
        data=lambda: npz_bytes(cap),
        file_name=f"{cap.model_name}-capture.npz",
        mime="application/octet-stream",
        on_click="ignore",
    )


main()
