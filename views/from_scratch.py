"""Attention from scratch: one head of the loaded model computed step by step from its weights, then
checked against the attention map the model itself returned."""

import streamlit as st

from explorer import session
from explorer.analyses import scratch
from explorer.analyses.scratch_steps import KEYS, TOKENS, walkthrough
from explorer.errors import InputError
from explorer.figures.learn import heatmap
from explorer.lessons.glossary import help_for
from explorer.models import anatomy
from explorer.web.display import md
from views.common import kept, model_or_stop, or_stop, share, shared_text

STACK, LAYER, HEAD = session.SCRATCH_STACK, session.SCRATCH_LAYER, session.SCRATCH_HEAD
CACHE = "scratch_capture"  # ((request, text, stack, layer), StackCapture) of this user's last run
KIND_LABELS = {"encoder": "encoder self", "decoder": "decoder self", "cross": "cross"}
MAX_TOKENS = 640  # every step is a heatmap of up to pos x pos cells; past Gemma's window of 512

st.title("Attention from scratch", help=help_for("query", "key", "value", "softmax"))
st.caption(
    "One attention head of the loaded model, computed here step by step from the layer's input and the "
    "model's own weights, then compared with the attention map the model returned."
)
loaded = model_or_stop()
parts = or_stop(anatomy.of, loaded.model)
stacks = parts.attention_kinds

text = shared_text(loaded, height=80)  # the workspace's text, the same on every page
cols = st.columns(3)
if len(stacks) > 1:
    stack = kept(
        "radio", "Attention", STACK, stacks[0], cols[0], options=stacks, horizontal=True,
        format_func=KIND_LABELS.get,
        help="The encoder reads the text; the decoder reads it shifted right behind its start token "
        "(teacher forcing); cross-attention: the decoder's queries on the encoder's output.",
    )  # fmt: skip
else:
    stack = stacks[0]
    cols[0].markdown(f"**Stack:** {stack}")
n_layers = parts.n_layers("decoder" if stack == "cross" else stack)
layer = kept("selectbox", "Layer", LAYER, 0, cols[1], options=list(range(n_layers)), help=help_for("layer"))

# One layer's input and maps are kept per user (every map of a long text would take hundreds of MB).
key = (loaded.request, text, stack, layer)
cached = st.session_state.get(CACHE)
if cached is not None and cached[0] == key:
    cap = cached[1]
else:
    try:
        with session.model_turn(loaded, "a run"), st.spinner("Running the model, recording its input …"):
            cap = scratch.capture(loaded, text, limit=MAX_TOKENS, layer=layer)[stack]
    except InputError as err:
        st.error(md(err))
        st.stop()
    st.session_state[CACHE] = (key, cap)

n_heads = cap.attentions[layer].shape[0]
head = kept("selectbox", "Head", HEAD, 0, cols[2], options=list(range(n_heads)), help=help_for("head"))
share(session.TEXT, STACK, LAYER, HEAD)  # a copied link opens this page on the same text and head

walk = walkthrough(loaded.model, cap, layer, head)
tokens = list(cap.tokens)
keys = list(cap.key_tokens or cap.tokens)
labels = {TOKENS: tokens, KEYS: keys}
verdict = "matches" if walk.ok else "does NOT match"
summary = f"Layer {layer}, head {head}: the computation below {verdict} the model's own map "
summary += f"(largest difference {walk.max_abs_diff:.2e}, tolerance {walk.tolerance:.0e})."
(st.success if walk.ok else st.error)(summary)
st.caption(f"{len(tokens)} tokens · {md(loaded.card.architecture)} · {md(loaded.card.attention)}")

for i, step in enumerate(walk.steps, 1):
    left, right = st.columns([1, 2])
    with left:
        st.markdown(f"**{i}. {md(step.title)}**")
        st.latex(step.latex)
        st.caption(f"shape {step.shape}" + (f" · {md(step.note)}" if step.note else ""))
    with right:
        rows = labels.get(step.rows)
        cols_ = labels.get(step.cols)
        probs = step.title.startswith("Attention weights")
        fig = heatmap(
            step.values, f"{i}. {step.title} ({step.shape})", rows=rows, cols=cols_,
            row_title="query" if cols_ is not None else "token",
            col_title="key" if cols_ is not None else "dimension",
            colorscale="Blues" if probs else "RdBu", symmetric=not probs,
        )  # fmt: skip
        st.plotly_chart(fig, key=f"scratch-step-{i}")

st.subheader("Check against the model")
st.markdown(
    "The model's own map comes from `model(..., output_attentions=True)` with eager attention, in the same "
    "forward pass that recorded the layer input."
)
left, right = st.columns(2)
with left:
    st.plotly_chart(
        heatmap(
            walk.model_map, "The model's own attention map", tokens, keys, "query", "key", "Blues", False
        ),
        key="scratch-model-map",
    )
with right:
    st.plotly_chart(
        # The scale runs from 0 (white) to the tolerance, or to the largest difference when that is more:
        # a map that matches to the last bit is white, not one solid colour.
        heatmap(
            abs(walk.computed - walk.model_map), "|from scratch − model|", tokens, keys, "query", "key",
            "Reds", False, zrange=(0.0, max(walk.tolerance, walk.max_abs_diff)),
        ),
        key="scratch-diff",
    )  # fmt: skip
result = "PASS" if walk.ok else "FAIL"
st.metric(
    f"Largest absolute difference ({result})", f"{walk.max_abs_diff:.3e}", help=f"tolerance {walk.tolerance}"
)
