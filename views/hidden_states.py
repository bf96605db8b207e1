"""The Hidden states page: how large each position's vector is, how much each block turns it, and
what each layer would predict (logit lens)."""

import numpy as np
import streamlit as st

from explorer import session
from explorer.analyses.hidden import (
    LENS_FIRST,
    LENS_MAX_POSITIONS,
    Lens,
    consecutive_cosine,
    logit_lens,
    norms,
)
from explorer.errors import InputError
from explorer.figures.attention import layer_position_heatmap, logit_lens_figure
from explorer.web.display import md
from views.common import capture_page, kept, share

VIEWS = ["Norms", "Change per layer", "Logit lens"]
NORMS_LOG, NORMS_SKIP_FIRST = "hidden_norms_log", "hidden_norms_skip_first"
DROWNS = 20  # a largest cell this many times the median leaves the others one colour


def lens_at(loaded, cap, positions: list[int]) -> Lens:
    """The logit lens at `positions`, computing only the positions not yet computed for this capture:
    the columns are kept with it, so adding a position runs that one alone."""
    done = session.figure(cap, "logit lens columns", dict)  # position -> its one-column Lens
    missing = [p for p in positions if p not in done]
    if missing:
        with session.model_turn(loaded, "the logit lens"), st.spinner("Unembedding every layer …"):
            found = logit_lens(loaded, cap, missing)
        done.update({p: found.at([p]) for p in missing})
    return Lens.join([done[p] for p in positions])


def stacks(cap) -> list[tuple[str, object]]:
    if cap.family == "encoder-decoder":
        return [
            ("Encoder", (cap.encoder_hidden_states, cap.source)),
            ("Decoder", (cap.hidden_states, cap.sequence)),
        ]
    return [("", (cap.hidden_states, cap.sequence))]


def main() -> None:
    st.title("Hidden states")
    found = capture_page("hidden states")
    if found is None:
        return
    loaded, cap = found
    views = VIEWS if cap.family == "decoder" else VIEWS[:2]
    view = (
        kept("segmented_control", "View", session.HIDDEN_VIEW, VIEWS[0], options=views, required=True)
        or VIEWS[0]
    )
    share(session.TEXT, session.TARGET, session.HIDDEN_VIEW)
    if view == "Norms":
        left, right = st.columns(2)
        log = kept("toggle", "Log colour scale", NORMS_LOG, False, left)
        skip = kept(
            "toggle", "Leave out the first token", NORMS_SKIP_FIRST, False, right,
            help="Many models give the first token a vector far larger than the others (it serves as an "
            "attention sink): its column can leave every other cell one colour.",
        )  # fmt: skip
        for name, (hidden, seq) in stacks(cap):
            values = norms(hidden)
            first = 1 if skip and values.shape[1] > 1 else 0
            rest = values[:, first:]
            if not log and rest.max() > DROWNS * np.median(rest):
                st.caption(
                    f"One cell{f' of the {name.lower()}' if name else ''} is "
                    f"{rest.max() / np.median(rest):,.0f} times the median: the others "
                    "all look alike. Try the log colour scale"
                    + (" or leaving out the first token." if not first else ".")
                )
            st.plotly_chart(
                layer_position_heatmap(
                    rest,
                    seq.tokens[first:],
                    f"{name} L2 norm of each position's hidden state".strip(),
                    "norm",
                    fmt=".2f",
                    log=log,
                    first_position=first,
                ),
                width="content",
                key=f"norms_{name}",
            )
        st.caption(
            "Row L0 is the embedding output; row L(i+1) the output of block i. The last row is taken after "
            "the model's final norm where it has one (as transformers returns it), which rescales it."
        )
    elif view == "Change per layer":
        for name, (hidden, seq) in stacks(cap):
            st.plotly_chart(
                layer_position_heatmap(
                    consecutive_cosine(hidden),
                    seq.tokens,
                    f"{name} cosine similarity between a block's input and its output".strip(),
                    "cosine",
                    zmin=-1.0,
                    zmax=1.0,
                    colorscale="RdBu",
                ),
                width="content",
                key=f"cosine_{name}",
            )
        st.caption(
            "Near 1: the block barely turned that position's vector; lower: it rewrote it. Row Li is block i."
        )
    else:
        n = len(cap.sequence)
        default = list(range(max(0, n - LENS_FIRST), n))
        # Positions chosen for another text (or model) do not carry over: a new text opens on its last ones.
        if st.session_state.get(session.LENS_FOR) != (cap.model_name, cap.sequence.ids):
            st.session_state[session.LENS_FOR] = (cap.model_name, cap.sequence.ids)
            st.session_state[session.LENS_POSITIONS] = default
        positions = kept(
            "multiselect",
            f"Positions (at most {LENS_MAX_POSITIONS})",
            session.LENS_POSITIONS,
            default,
            options=list(range(n)),
            format_func=lambda i: f"{i}: {cap.sequence.tokens[i]}",
            max_selections=LENS_MAX_POSITIONS,
        )

        def lens_figure():
            lens = lens_at(session.live(loaded), cap, sorted(positions))
            return logit_lens_figure(lens.top_probs, lens.top_tokens, cap.sequence.tokens, lens.positions)

        try:  # kept with the capture: coming back to these positions runs nothing
            fig = session.figure(cap, ("logit lens", tuple(sorted(positions))), lens_figure)
        except InputError as err:
            st.warning(md(err))
            return
        st.plotly_chart(fig, width="content", key="logit_lens")
        st.caption(
            "Each layer's hidden state put through the model's own final norm and unembedding, as if it were "
            "the last layer (nostalgebraist's logit lens). The last row is the model's real prediction."
        )


main()
