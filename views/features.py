"""Features: what a sparse autoencoder reads in the residual stream of the workspace's text, and each
feature's dashboard (explorer.sae)."""

import streamlit as st

from explorer import session
from explorer.errors import InputError
from explorer.figures.features import contexts_html, histogram
from explorer.figures.learn import bars, heatmap
from explorer.lessons.glossary import help_for
from explorer.models import zoo
from explorer.sae import features
from explorer.sae.sae import Sae, load
from explorer.web.display import md
from views.common import focus_position, kept, model_or_stop, share, shared_text

SAE_DONE = "features_sae_loaded"  # (folder, Sae, logit weights, contexts) of this user's SAE
CONTEXT_TEXTS = "features_context_texts"  # ((request, folder), each feature's top contexts as text)
RUN_DONE = "features_run"  # ((request, folder, text), TokenFeatures)
TOP = 8

st.title("Features: what a sparse autoencoder reads", help=help_for("sparse autoencoder", "residual stream"))
st.caption(
    "A sparse autoencoder (SAE) rewrites the residual stream entering one layer as a sum of a few "
    "directions out of thousands, its features, each with a strength (its activation). A feature that "
    "fires on related tokens in many texts is something the model represents there."
)
loaded = model_or_stop()
if loaded.card.family != "decoder":
    st.info(
        f"{md(loaded.card.name)} is not a decoder: the SAEs read here are trained on a decoder's residual "
        "stream (the embedded SmolLM2 has one)."
    )
    share()
    st.stop()
own = zoo.sae_folder(loaded.request)
st.session_state.setdefault(session.FEAT_SAE, "")
folder = kept(
    "text_input", "Your own SAE: a folder in SAELens' layout (cfg.json, sae_weights.safetensors)",
    session.FEAT_SAE, "",
    help="Empty: the SAE trained here for this model, if any. Gemma Scope's and SAELens' saves read too.",
).strip()  # fmt: skip
chosen = folder or (str(own) if own is not None else "")
if not chosen:
    st.info(
        f"No SAE was trained here for {md(loaded.card.name)}. Load SmolLM2 (its SAE, layer 15, comes with "
        "the app) or type the folder of one in SAELens' layout for this model."
    )
    share(session.FEAT_SAE)
    st.stop()


def open_sae(path: str) -> tuple[Sae, object, dict | None]:
    found = st.session_state.get(SAE_DONE)
    if found is not None and found[0] == (loaded.request, path):
        return found[1]
    sae = load(path)
    features.reads(loaded, sae)  # InputError when it does not fit this model
    with st.spinner("Reading the features' logit weights …"):
        made = (sae, features.logit_weights(loaded, sae), features.saved_contexts(sae))
    st.session_state[SAE_DONE] = ((loaded.request, path), made)
    return made


try:
    sae, weights, contexts = open_sae(chosen)
except InputError as err:
    st.error(md(err))
    share(session.FEAT_SAE)
    st.stop()
cfg = sae.cfg
st.caption(
    f"SAE: {md(cfg.get('architecture', sae.architecture))}, {sae.d_sae:,} features on the stream entering "
    f"layer {sae.layer} ({sae.d_in} numbers)"
    + (f", k = {sae.k}" if sae.k else "")
    + (f". Card: {md(str(sae.folder))}/README.md" if (sae.folder / "README.md").is_file() else ".")
)
text = shared_text(loaded, height=80)
key = (loaded.request, chosen, text)
done = st.session_state.get(RUN_DONE)
if done is None or done[0] != key:
    try:
        with session.model_turn(loaded, "a run"), st.spinner("Running the model and the SAE …"):
            found = features.on_text(loaded, sae, text)
    except InputError as err:
        st.error(md(err))
        st.stop()
    st.session_state[RUN_DONE] = (key, found)
else:
    found = done[1]

# the address bar is written before the pictures are drawn (and once more when the feature is known)
session.write_link((session.TEXT, session.FEAT_SAE, session.FEATURE, session.FOCUS))

# -- the text's features ---------------------------------------------------------------------------
st.subheader("The features on each token")
acts = found.acts
rows = sorted({f for p in range(1, len(found.tokens)) for f, _ in found.top(p, 3)},
              key=lambda f: -float(acts[:, f].max()))[:30]  # fmt: skip
if rows:
    st.plotly_chart(
        heatmap(acts[:, rows].T, "The strongest features of the text (rows) on each token",
                [f"#{f}" for f in rows], list(found.tokens), "feature", "token", colorscale="Viridis",
                symmetric=False),
        key="feat_map",
    )  # fmt: skip
st.caption(
    "The first position is left blank: it is the attention sink, whose stream is unlike every other "
    "position's, and the SAE was not trained on it."
)
focus_position(loaded, found.tokens, len(found.tokens) - 1)
pos = kept("selectbox", "Token", session.FOCUS, len(found.tokens) - 1, options=list(range(len(found.tokens))),
           format_func=lambda p: f"{p}: {found.tokens[p]}")  # fmt: skip
top = found.top(pos, TOP)
if top:
    st.plotly_chart(
        bars([f"feature {f}" for f, _ in top], [a for _, a in top],
             f"Features firing on “{found.tokens[pos]}” ({pos})", "activation",
             [f"feature {f}: {a:.3f}" for f, a in top]),
        key="feat_token",
    )  # fmt: skip
    cols = st.columns(len(top))
    for col, (f, _) in zip(cols, top):
        if col.button(f"Open #{f}", key=f"feat_open_{f}"):
            st.session_state[session.FEATURE] = f  # the dashboard below, and the link, follow
else:
    st.info("No feature fires here." if pos else "The first position is not read.")

# -- one feature -----------------------------------------------------------------------------------
st.subheader("A feature's dashboard")
c1, c2, c3 = st.columns([1, 1, 1])
default = top[0][0] if top else 0
feature = kept("number_input", "Feature", session.FEATURE, default, c1, min_value=0, max_value=sae.d_sae - 1)
with c2:
    word = st.text_input("Find features by a token they promote", key="feat_find_token",
                         placeholder="e.g.  function")  # fmt: skip
with c3:
    phrase = st.text_input("… or by a word in their top contexts", key="feat_find_word",
                           placeholder="e.g. tensor", disabled=contexts is None)  # fmt: skip
try:
    if word:
        hits = features.search_by_token(loaded, weights, word)
        st.write("Features that promote it most: " + ", ".join(f"#{f} ({v:+.2f})" for f, v in hits))
    if phrase and contexts is not None:
        texts = st.session_state.get(CONTEXT_TEXTS)
        if texts is None or texts[0] != (loaded.request, chosen):
            with st.spinner("Reading the top contexts …"):
                texts = ((loaded.request, chosen), features.context_texts(loaded, contexts))
            st.session_state[CONTEXT_TEXTS] = texts
        hits = features.search_contexts(texts[1], phrase)
        st.write("Features with it in their top contexts: " + (", ".join(f"#{f}" for f in hits) or "none"))
except InputError as err:
    st.warning(md(err))
board = features.dashboard(loaded, sae, int(feature), weights, contexts)
share(session.TEXT, session.FEAT_SAE, session.FEATURE, session.FOCUS)
if st.button(f"Steer generation with feature #{board.feature}", help="Opens Generate, this feature added."):
    st.session_state[session.GEN_FEAT_STEER] = True
    st.session_state[session.GEN_FEAT] = board.feature
    st.switch_page("views/generate.py")
m1, m2, m3 = st.columns(3)
on_text = acts[:, board.feature]
m1.metric(
    "Fires on this text", f"{int((on_text > 0).sum())} tokens", help="The largest: " + f"{on_text.max():.3f}"
)
if board.frequency is not None:
    m2.metric("Fires on the training text", f"{board.frequency:.3%} of tokens")
    m3.metric("Largest activation there", f"{board.hist_max:.3f}")
for column, (what, ranked) in zip(
    st.columns(2), (("promotes", board.promoted), ("suppresses", board.suppressed))
):
    column.plotly_chart(
        bars([t for t, _ in ranked], [v for _, v in ranked], f"Tokens it {what} (logit weight)",
             "logit weight", [f"{t}: {v:+.3f}" for t, v in ranked]),
        key=f"feat_{what}",
    )  # fmt: skip
st.caption(
    "Logit weight: the feature's decoder direction times the final norm's gain, read by the unembedding "
    "(what one unit of the feature adds to each logit, before the norm's scale)."
)
if board.hist_counts is not None:
    title = "Its activations on the training text (when it fires)"
    st.plotly_chart(histogram(board.hist_counts, board.hist_max, title), key="feat_hist")
if board.contexts:
    st.markdown(
        "**Where it fires most on the training text** (each token shaded by the feature's activation)"
    )
    st.html(contexts_html(board.contexts))
elif contexts is None:
    st.caption("This SAE's folder has no contexts.safetensors: its top contexts were not saved with it.")
