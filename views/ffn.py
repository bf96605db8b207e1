"""FFN memory: the feed-forward neurons that fire on a token, the tokens their outputs promote, and how
much of each layer's update comes from attention and how much from the feed-forward network."""

import numpy as np
import pandas as pd
import streamlit as st

from explorer import session
from explorer.analyses import ffn
from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.figures.learn import bars, stacked_shares
from explorer.lessons.glossary import help_for
from explorer.models import anatomy
from explorer.web.display import md
from views.common import focus_position, kept, model_or_stop, or_stop, share, shared_text

LAYER, POSITION, PUSHED = session.FFN_LAYER, session.FFN_POSITION, session.FFN_PUSHED
TOP_K = "ffn_top_k"
THROUGH_NORM = "ffn_through_norm"
CACHE = "ffn_capture"  # ((request, text, layer), FfnCapture) of this user's last run
FACT = "The Eiffel Tower is in the city of"  # an example: its last token is the one that predicts " Paris"
MAX_TOKENS = 512

st.title("FFN memory: how LLMs store facts", help=help_for("feed-forward network", "neuron"))
st.caption(
    "Each layer's feed-forward network is a large set of neurons. A neuron reads the token's vector, "
    "fires (its activation), and adds its own output vector to the residual stream, scaled by that "
    "activation. Read through the unembedding, an output vector says which next tokens it makes likelier: "
    "a key-value memory (Geva et al., 2021)."
)
loaded = model_or_stop()
parts = or_stop(anatomy.of, loaded.model)
or_stop(parts.blocks(ffn.ffn_stack(loaded.model))[0].ffn.dense)  # a mixture of experts: no one FFN to read

if st.button("Example: a fact to recall", help=f"Puts “{FACT}” in the text box (for every page)."):
    st.session_state[session.TEXT] = FACT
text = shared_text(loaded, height=80)  # the workspace's text, the same on every page
stack = ffn.ffn_stack(loaded.model)
n_layers = parts.n_layers(stack)
cols = st.columns([1, 2, 1])
# kept(): the choices are checked against what this model and text offer (a stale or mangled one is
# replaced, never compared as it is)
layer = kept(
    "selectbox", "Layer", LAYER, n_layers // 2, cols[0], options=list(range(n_layers)), help=help_for("layer")
)
key = (loaded.request, text, layer)  # one layer's FFN input per user
cached = st.session_state.get(CACHE)
if cached is not None and cached[0] == key:
    cap = cached[1]
else:
    try:
        with session.model_turn(loaded, "a run"), st.spinner("Running the model, recording the FFN input …"):
            cap = ffn.capture(loaded, text, limit=MAX_TOKENS, layer=layer)
    except InputError as err:
        st.error(md(err))
        st.stop()
    st.session_state[CACHE] = (key, cap)

# the token chosen here or on Flow for this text; a new text or model: its last token first
focus_position(loaded, cap.tokens, len(cap.ids) - 1)
position = kept(
    "selectbox", "Token", POSITION, len(cap.ids) - 1, cols[1], options=list(range(len(cap.ids))),
    format_func=lambda i: f"{i}: {cap.tokens[i]}",
)  # fmt: skip
k = cols[2].slider("Neurons", 5, 30, 10, key=TOP_K)
st.session_state.setdefault(PUSHED, " Paris")
share(session.TEXT, LAYER, POSITION, PUSHED)  # a copied link opens this page on the same text and choices
if cap.stack == "decoder" and len(parts.stacks) == 2:
    st.caption(
        "Encoder-decoder: the decoder's layers, reading the text shifted right behind its start token."
    )

acts = cap.activations[layer]  # (pos, d_ff)
row = acts[position]
order = row.abs().argsort(descending=True)[:k].tolist()
st.latex(ffn.formula(loaded.model))
st.caption(
    f"Layer {layer} has {acts.shape[1]:,} neurons. The {k} with the largest |activation| on token "
    f"{position} ({md(cap.tokens[position])}): the numbers the model's down projection reads."
)
fig = bars(
    [f"neuron {n}" for n in order], [float(row[n]) for n in order],
    f"Layer {layer}, token {position} ({cap.tokens[position]}): strongest neurons", "activation",
    [f"neuron {n}: {float(row[n]):.4g}" for n in order],
)  # fmt: skip
st.plotly_chart(fig, key="ffn-neurons")

if ffn.can_unembed(loaded.model):
    try:
        gamma, norm_name = ffn.final_norm_scale(loaded.model)
    except anatomy.UnsupportedModel as err:
        st.warning(md(err))
        gamma, norm_name = None, ""
    through = gamma is not None and st.toggle(f"Through the {norm_name}", value=True, key=THROUGH_NORM)
    st.latex(r"\text{logits} = W_U\,(\gamma \odot w_{out})" if through else r"\text{logits} = W_U\, w_{out}")
    note = "w_out is the neuron's column of the down projection: what it writes per unit of activation. "
    if gamma is not None:
        note += (
            "γ is the final norm's scale; the norm's division by the vector's size (and, for LayerNorm, its "
            "mean and bias) depends on the whole residual stream and is left out, as is usual (logit lens)."
        )
    else:
        note += "The decoder has no final norm before its unembedding (each block ends in its own)."
    if parts.blocks(cap.stack)[layer].ffn_post_norm is not None:
        note += " This model also normalizes the whole FFN output before adding it: left out too."
    st.caption(note)
    top, top_ids, low, low_ids = ffn.promoted(
        loaded.model, ffn.out_vectors(loaded.model, cap.stack, layer, order), k=6, through_norm=through
    )
    tok = loaded.tokenizer
    table = pd.DataFrame(
        {
            "neuron": order,
            "activation": [round(float(row[n]), 4) for n in order],
            "promotes (top logits)": [" · ".join(display_tokens(tok, ids.tolist())) for ids in top_ids],
            "suppresses (lowest)": [" · ".join(display_tokens(tok, ids.tolist())) for ids in low_ids],
            "top logit": [round(float(v[0]), 3) for v in top],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(
        "A neuron with a negative activation writes −w_out: it promotes the right-hand column instead."
    )
    st.subheader("Which neurons push a token?")
    wanted = kept("text_input", "Token (with its leading space)", PUSHED, " Paris")
    ids = tok(wanted, add_special_tokens=False)["input_ids"] if wanted else []
    if len(ids) != 1:
        pieces = " · ".join(display_tokens(tok, ids))
        st.info(
            f"{md(repr(wanted))} is {len(ids)} tokens here ({md(pieces)}): type one token, such as ' Paris'."
            if ids
            else "Type a token to find the neurons of this layer that push it."
        )
    else:
        found = ffn.pushers(loaded.model, cap.stack, layer, ids[0], row, k=k, through_norm=through)
        st.dataframe(
            pd.DataFrame(
                {
                    "neuron": found.neurons,
                    "activation": np.round(found.activations, 4),
                    "logit per unit": np.round(found.per_unit, 4),
                    f"adds to the logit of {display_tokens(tok, ids)[0]}": np.round(found.effects, 4),
                }
            ),
            hide_index=True,
            width="stretch",
        )
        st.caption(
            f"Layer {layer}'s neurons ranked by what they add to that token's logit at token {position}: "
            "their activation there times W_U[token] · (γ ⊙ w_out), the same reading as the table above."
        )
else:
    st.info(
        f"{md(loaded.card.architecture)} is not a decoder-only model or an encoder-decoder with an LM head: "
        "its neurons' outputs are not read as next-token logits here (an encoder's masked-LM head also "
        "transforms a vector, with a dense layer, an activation and a LayerNorm, before its unembedding)."
    )

st.subheader("Who writes into the residual stream: attention or the FFN")
choice = st.radio("Over", ["this token", "the mean over all tokens"], horizontal=True, key="ffn_share_over")
attn = cap.attn_norms[:, position] if choice == "this token" else cap.attn_norms.mean(1)
ffn_n = cap.ffn_norms[:, position] if choice == "this token" else cap.ffn_norms.mean(1)
st.plotly_chart(
    stacked_shares(
        np.asarray(attn), np.asarray(ffn_n), "Size of each layer's two updates (L2 norm), as shares"
    ),
    key="ffn-shares",
)
post = parts.placement == "post"
st.caption(
    "The L2 norm of what attention adds and what the FFN adds to the residual stream at each layer"
    + (
        "; this model normalizes after each addition (post-norm), so the norms are measured before that."
        if post
        else "."
    )
)
