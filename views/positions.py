"""Positions: the sinusoidal encoding of "Attention Is All You Need", then the loaded model's own scheme."""

import numpy as np
import streamlit as st

from explorer import session
from explorer.analyses import positions
from explorer.figures.learn import heatmap, lines
from explorer.lessons.glossary import help_for
from explorer.models import anatomy
from explorer.web.display import md
from views.common import kept, no_model, or_stop, share

SINE_POSITIONS, LEARNED_POSITIONS, REACH = session.POS_SINE, session.POS_LEARNED, session.POS_REACH

st.title("Positions", help=help_for("position encoding", "RoPE"))
st.caption(
    "Attention itself does not know the order of tokens: with no position signal, an encoder given a "
    "shuffled sentence returns the same vectors, shuffled (a decoder's causal mask tells it only which "
    "tokens came before, not how far). Each model family adds order in its own way."
)

loaded = session.current_model()
d_model = loaded.card.d_model if loaded is not None else 128
LINKED = (session.POS_SINE, session.POS_LEARNED, session.POS_REACH)


def slider(label: str, key: str, lo: int, hi: int, default: int, **kwargs) -> int:
    """A slider whose value, kept across visits and carried by links, is brought within [lo, hi] first
    (a link or another model may hold one this model's slider does not reach)."""
    value = st.session_state.get(key, default)
    st.session_state[key] = min(max(int(value), lo), hi)
    session.checked(key)
    return kept("slider", label, key, default, min_value=lo, max_value=hi, **kwargs)


st.subheader("Sinusoidal encoding (Vaswani et al., 2017)")
st.latex(
    r"PE_{(pos,\,2i)} = \sin\!\left(\frac{pos}{10000^{2i/d_{model}}}\right), \qquad "
    r"PE_{(pos,\,2i+1)} = \cos\!\left(\frac{pos}{10000^{2i/d_{model}}}\right)"
)
n_sine = slider("Positions", SINE_POSITIONS, 16, 512, 128, step=16)
share(*LINKED)  # the model and the sliders in the URL (again at the end, with the model's own sliders)
st.caption(
    f"d_model = {d_model} (the loaded model's width). Each pair of columns is a clock turning at its own "
    "speed: the first pairs turn once every few tokens, the last ones take thousands of tokens; any "
    "offset k is a fixed rotation of every pair, which lets attention read relative positions."
)
st.plotly_chart(
    heatmap(positions.sinusoidal(n_sine, d_model), f"Sinusoidal encoding ({n_sine} × {d_model})",
            row_title="position", col_title="dimension", height=420),
    key="positions-sine",
)  # fmt: skip

if loaded is None:
    no_model("Load a model in the sidebar to see its own position scheme.")
    st.stop()
st.subheader(f"{md(loaded.card.name)}: {md(loaded.card.position_encoding)}")
kind = or_stop(positions.scheme, loaded.model)

if kind == positions.LEARNED:
    table, offset = positions.learned_table(loaded.model)
    st.markdown(
        "A learned vector per position, added to the token embedding before the first layer. Nothing "
        "forces any structure on them; training does. Similar vectors for nearby positions mean the model "
        "learned a smooth sense of distance."
    )
    if offset:
        st.caption(f"Position 0 is row {offset} of the table (the rows before it are reserved).")
    most = len(table)
    n = slider("Positions shown", LEARNED_POSITIONS, 8, min(most, 1024), min(most, 128))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            heatmap(table[:n], f"Learned position vectors ({n} of {most} × {table.shape[1]})",
                    row_title="position", col_title="dimension", height=520),
            key="positions-learned",
        )  # fmt: skip
    with right:
        st.latex(r"\cos(p_i, p_j) = \frac{p_i \cdot p_j}{\lVert p_i \rVert\, \lVert p_j \rVert}")
        sim = positions.cosine_similarity(table[:n])
        st.plotly_chart(
            heatmap(sim, "Cosine similarity between positions", row_title="position", col_title="position",
                    height=480),
            key="positions-cosine",
        )  # fmt: skip
elif kind == positions.ROTARY:
    sets = positions.rotary_sets(loaded.model)
    st.markdown(
        "Rotary position embedding (RoPE): nothing is added to the tokens. Inside every attention layer, "
        "each query and key vector is cut into pairs of dimensions, and pair i at position m is turned by "
        "the angle m·θᵢ. The dot product of a query at m and a key at n then depends on m − n only."
    )
    st.latex(
        r"\theta_i = \text{base}^{-2i/d_{head}}, \qquad "
        r"\langle R_m q, R_n k \rangle = \langle q, R_{n-m} k \rangle"
    )
    for s in sets:
        layers = (
            "all layers" if s.name == "all layers" else f"{len(s.layers)} layers ({s.name.replace('_', ' ')})"
        )
        st.caption(
            f"{md(layers)}: base θ = {s.theta if s.theta is not None else '?'}, rope type {md(s.rope_type)}, "
            f"{len(s.inv_freq)} pairs per head, attention scaling {s.attention_scaling:g}."
        )
    limit = loaded.card.context_length or 4096
    reach = slider("Distance shown (tokens)", REACH, 16, int(min(limit, 32768)), int(min(limit, 512)))
    dist = np.arange(reach + 1)
    left, right = st.columns(2)
    with left:
        series = {s.name: positions.rotary_decay(s.inv_freq, dist) for s in sets}
        st.plotly_chart(
            lines(dist, series, "q·k after rotation vs distance (q = k, equal weight per pair)",
                  "distance m − n (tokens)", "relative dot product"),
            key="positions-decay",
        )  # fmt: skip
        st.latex(
            r"\frac{\langle R_m q, R_n q\rangle}{\lVert q \rVert^2} = \frac{1}{d/2}\sum_i \cos((m-n)\theta_i)"
        )
    with right:
        fig = lines(
            np.arange(len(sets[0].inv_freq)), {s.name: positions.wavelengths(s.inv_freq) for s in sets},
            "Wavelength of each rotated pair", "pair i", "tokens per turn (2π/θᵢ)",
        )  # fmt: skip
        fig.update_yaxes(type="log")
        st.plotly_chart(fig, key="positions-wavelengths")
    st.caption(
        "The frequencies are read from the model's rotary module (its inv_freq buffers), so they include any "
        "rope scaling its config sets."
    )
else:
    st.markdown(
        "T5 adds no position vectors. Each attention head adds a learned number to its score for a "
        "query–key pair, chosen by the bucket of their relative distance: one bucket per distance up to 8 "
        "(encoder: each direction), then buckets growing logarithmically up to a maximum distance."
    )
    for stack in anatomy.of(loaded.model).stack_names:
        rb = positions.t5_relative(loaded.model, stack)
        st.markdown(f"**{stack.capitalize()}** ({rb.n_buckets} buckets, max distance {rb.max_distance})")
        left, right = st.columns(2)
        with left:
            st.plotly_chart(
                lines(rb.distances, {"bucket": rb.buckets}, f"{stack}: bucket per relative distance",
                      "key − query (tokens)", "bucket"),
                key=f"positions-buckets-{stack}",
            )  # fmt: skip
        with right:
            st.plotly_chart(
                heatmap(rb.bias, f"{stack}: learned bias per head", row_title="head",
                        col_title="key − query", x_values=rb.distances.tolist(), height=360),
                key=f"positions-bias-{stack}",
            )  # fmt: skip

share(*LINKED)
