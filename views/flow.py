"""Flow: the routes by which information reaches a position (Ferrando & Voita, 2024), as one graph."""

import pandas as pd
import streamlit as st

from explorer import session
from explorer.analyses import flow
from explorer.errors import InputError
from explorer.figures.flow import graph
from explorer.lessons.glossary import help_for
from explorer.web.display import md
from views.common import focus_position, kept, model_or_stop, or_stop, share, text_inputs

SEEN = "flow_seen"  # the (model, text, target) key this user's page last showed
LENS = "flow_lens"  # ((request, text, target), {(boundary, pos): [(token, prob)]}) computed so far
POSITION = session.FLOW_POSITION
THRESHOLD = session.FLOW_THRESHOLD
DETAIL = "flow_detail"  # the key of the edge or FFN mark whose details are shown
PICKED = "flow_picked"  # the last point clicked in the graph (so that one click is acted on once)
NONE = "(none)"

st.title("Flow", help=help_for("residual stream", "logit lens"))
st.caption(
    "Which routes carry information to a position: an edge where an attention head moves a meaningful "
    "part of one position's residual stream into another, a square where the feed-forward network writes "
    "a meaningful part. Each term's importance is its proximity to the sum it is part of (L1 distance), "
    "normalized per position and sub-layer (Ferrando & Voita, 2024, Information Flow Routes). Computed "
    "from one forward pass of the model, with the model's own weights."
)
loaded = model_or_stop("Load a model in the sidebar to trace its information flow.")
or_stop(flow.flow_stack, loaded.model)

text, target = text_inputs(loaded)
key = ("flow", loaded.request, text, target or "")
if st.session_state.get(SEEN) != key:  # a new text starts with nothing opened
    st.session_state[SEEN] = key  # (set before running, so that a choice made meanwhile is not undone)
    st.session_state[LENS] = (key, {})
    st.session_state[DETAIL] = NONE
    st.session_state.pop(PICKED, None)
# one Flow per (model, text, target) in the server's store, shared by the sessions reading the same text
# and dropped first when memory runs short
try:
    result = session.shared_run(
        loaded, key, "tracing information flow",
        "Running the model once and splitting every residual update into its terms …",
        lambda: flow.compute(loaded, text, target or None),
    )  # fmt: skip
except InputError as err:
    st.error(md(err))
    st.stop()
# the token chosen here or on FFN memory for this text; a new text or model: its last token first
focus_position(loaded, result.tokens, result.n_pos - 1)

if result.source_tokens is not None:
    how = "the model's own greedy output" if result.target_generated else "your prefix"
    st.caption(
        f"Encoder-decoder: the decoder's routes over {how} ({result.n_pos} tokens); purple edges come from "
        f"the encoder's output at its {len(result.source_tokens)} tokens (bottom left). Each decoder layer "
        "has three sub-layers: self-attention, cross-attention, FFN."
    )
if result.parallel:
    st.caption(
        "Parallel blocks: attention and the FFN both read the block's input, and the block adds both to it. "
        "Each layer is drawn as two steps of that one sum: the input plus attention's terms, then plus the "
        "FFN's output (the block's output). An FFN square leads the routes to the block's input."
    )

left, right = st.columns([2, 1])
positions = list(range(result.n_pos))
position = kept(
    "selectbox", "Trace the routes to", POSITION, result.n_pos - 1, left, options=positions,
    format_func=lambda i: f"{i}: {result.tokens[i]}",
)  # fmt: skip
threshold = kept(
    "slider", "Threshold (importance an edge needs to be drawn)", THRESHOLD, 0.04, right,
    min_value=0.01, max_value=0.5, step=0.01,
)  # fmt: skip
share(session.TEXT, session.TARGET, POSITION, THRESHOLD)
routes = flow.trace(result, position, threshold)

n_sub = len(result.sublayers)
lens = {}
if flow.has_lens(loaded.model):
    known = st.session_state.get(LENS)
    known = known[1] if known is not None and known[0] == key else {}
    wanted = sorted({(lv // n_sub, p) for lv, p in routes.nodes if lv % n_sub == 0} - set(known))
    if wanted:
        with session.model_turn(loaded, "reading the graph's nodes through the logit lens"):
            known.update(flow.lens_tops(loaded, result, wanted))
        st.session_state[LENS] = (key, known)
    lens = known

choices = [NONE] + [e.key for e in sorted(routes.edges, key=lambda e: -e.importance) if e.kind != "residual"]
by_key = {e.key: e for e in routes.edges}
st.session_state.setdefault(DETAIL, NONE)
selected = st.session_state[DETAIL] if st.session_state[DETAIL] in by_key else None
fig = graph(result, routes, lens, selected)
event = st.plotly_chart(fig, key="flow-graph", on_select="rerun", selection_mode="points")
points = (event or {}).get("selection", {}).get("points", []) if event else []
if points:
    picked = points[0].get("customdata")
    picked = picked[0] if isinstance(picked, list) and picked else picked
    if picked != st.session_state.get(PICKED):
        st.session_state[PICKED] = picked
        if picked in by_key and by_key[picked].kind != "residual":
            st.session_state[DETAIL] = picked
            st.rerun()
counts = {k: sum(e.kind == k for e in routes.edges) for k in ("attention", "cross", "ffn")}
st.caption(
    "Grey: the residual stream kept; blue: attention edges (a head moves information from the lower "
    "token to the upper one); "
    + ("purple: cross-attention from the encoder's tokens; " if result.source_tokens is not None else "")
    + "orange squares: FFN marks. Width and opacity grow with importance. "
    + f"{counts['attention']} attention edges"
    + (f", {counts['cross']} cross-attention edges" if result.source_tokens is not None else "")
    + f" and {counts['ffn']} FFN marks at threshold {threshold:g}, traced down from token {position}. "
    "Hover for exact numbers"
    + (" and each node's top tokens through the logit lens" if lens else "")
    + "; click an edge or an FFN square (or choose below) for its heads or neurons."
)


def describe(k: str) -> str:
    if k == NONE:
        return "(choose an edge or an FFN mark)"
    e = by_key[k]
    tgt = f"{e.tgt} {result.tokens[e.tgt]!r}"
    if e.kind == "ffn":
        return f"layer {e.layer} FFN at {tgt}: {e.importance:.3f}"
    src = result.source_tokens[e.src] if e.kind == "cross" else result.tokens[e.src]
    where = "encoder " if e.kind == "cross" else ""
    return f"layer {e.layer} {e.sublayer}: {where}{e.src} {src!r} → {tgt}: {e.importance:.3f}"


detail = kept("selectbox", "Details for", DETAIL, NONE, options=choices, format_func=describe)
if detail != NONE:
    e = by_key[detail]
    if e.kind == "ffn":
        with session.model_turn(loaded, "finding the FFN's top neurons"):
            neurons = flow.top_neurons(loaded, result, e.layer, e.tgt, k=10)
        st.markdown(f"**{md(describe(detail))}**: the neurons that write most of this FFN output")
        table = {
            "neuron": [n.index for n in neurons],
            "activation": [round(n.activation, 4) for n in neurons],
            "share of the FFN output": [round(n.share, 4) for n in neurons],
        }
        if any(n.promotes for n in neurons):
            table["promotes (through the unembedding)"] = [" · ".join(n.promotes) for n in neurons]
        st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
        st.caption(
            "Share: the neuron's output a·w_out projected on the FFN's whole output f, divided by |f|² "
            "(all neurons' shares and the bias add up to 1)."
            + (
                " Promoted tokens: W_U (γ ⊙ ±w_out), the sign of the activation applied."
                if "promotes (through the unembedding)" in table
                else ""
            )
        )
    else:
        heads = result.heads[e.sublayer][e.layer, :, e.tgt, e.src]
        weights = result.weights[e.sublayer][e.layer, :, e.tgt, e.src]
        order = heads.argsort()[::-1]
        st.markdown(f"**{md(describe(detail))}**: the heads that make up this edge")
        st.dataframe(
            pd.DataFrame(
                {
                    "head": order,
                    "importance": [round(float(heads[h]), 4) for h in order],
                    "share of the edge": [
                        round(float(heads[h] / max(e.importance, 1e-30)), 4) for h in order
                    ],
                    "attention weight": [round(float(weights[h]), 4) for h in order],
                }
            ),
            hide_index=True,
            width="stretch",
        )
        st.caption(
            "A head's importance is the edge's importance split among its heads by the proximity of each "
            "head's piece (attention weight × value vector through the head's output projection) to the "
            "edge's vector; the heads add up to the edge."
        )

with st.expander("How this is computed"):
    st.markdown(
        "At every sub-layer, position t's residual stream becomes y = x + u: the stream x plus what the "
        "sub-layer adds. Attention's u splits exactly into one term per head and source position "
        "(attention weight × value vector × the head's slice of the output projection; the output bias "
        "is shared out by the attention weights). A term z counts by its proximity "
        "max(0, ‖y‖₁ − ‖y − z‖₁), normalized over the terms of y. Post-norm models (BERT, BART): y is the "
        "sum before the LayerNorm. Gemma 3 and OLMo 2 normalize each sub-layer's output before adding it: "
        "that scaling, fixed per position, is applied to every term. Parallel blocks (GPT-J, Pythia, "
        "Falcon, Phi): the input plus attention, then plus the FFN, add up to the block's output. The "
        "graph keeps the edges with importance ≥ the threshold that reach the chosen token, from the top "
        "down."
    )
