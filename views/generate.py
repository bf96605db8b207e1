"""The Generate page: step through generation one token at a time."""

import numpy as np
import streamlit as st

from explorer import session
from explorer.analyses import attribution, steering
from explorer.analyses.tokens import display_tokens, split_characters, token_bytes
from explorer.errors import InputError
from explorer.figures.attention import layer_position_heatmap
from explorer.figures.experiments import paired_bars
from explorer.figures.learn import heatmap
from explorer.figures.steps import candidates_figure, sequence_html, tree_figure
from explorer.lessons.glossary import help_for
from explorer.models import anatomy, zoo
from explorer.runs.stepping import Settings, Stepper, templated
from explorer.web.display import md
from views.common import DEFAULT_TEXT, default_text, kept, no_model, share

DEFAULT_PROMPT = "The capital of France is"  # a base model continues it
DEFAULT_QUESTION = "What is the capital of France?"  # an instruct model answers it
MAX_RUN = 256
GEN_FOR = "generate_prompt_for"  # the model the prompt box was last drawn for
STEER_DONE = "generate_steer_built"  # (inputs, Steer) of this user's last steering vector
FEAT_STEER_DONE = "generate_feat_steer_built"  # (inputs, FeatureSteer) of this user's feature steering
ATTR_DONE = "generate_attr_done"  # (model, steering, PerToken): this user's attributed tokens


def settings_panel() -> Settings:
    st.subheader("How the next token is chosen")
    mode = kept(
        "radio",
        "Choice",
        session.GEN_MODE,
        "greedy",
        options=["greedy", "sample"],
        horizontal=True,
        format_func={"greedy": "greedy (most likely)", "sample": "sample with a seed"}.get,
    )
    c1, c2, c3, c4, c5 = st.columns(5)
    seed = kept(
        "number_input",
        "Seed",
        session.GEN_SEED,
        0,
        c1,
        min_value=0,
        max_value=2**31 - 1,
        disabled=mode == "greedy",
    )
    temperature = kept(
        "number_input",
        "Temperature",
        session.GEN_TEMPERATURE,
        1.0,
        c2,
        min_value=0.05,
        max_value=5.0,
        step=0.05,
        help=help_for("temperature"),
    )
    top_k = kept(
        "number_input",
        "top-k (0 = off)",
        session.GEN_TOP_K,
        0,
        c3,
        min_value=0,
        max_value=1000,
        help=help_for("top-k"),
    )
    top_p = kept(
        "number_input",
        "top-p",
        session.GEN_TOP_P,
        1.0,
        c4,
        min_value=0.01,
        max_value=1.0,
        step=0.01,
        help=help_for("top-p"),
    )
    rep = kept(
        "number_input",
        "Repetition penalty",
        session.GEN_REPETITION,
        1.0,
        c5,
        min_value=0.5,
        max_value=3.0,
        step=0.05,
    )
    return Settings(
        float(temperature), int(top_k), float(top_p), float(rep), int(seed) if mode == "sample" else None
    )


def inputs(loaded) -> tuple[str, bool, str | None]:
    family = loaded.card.family
    source = None
    if family == "encoder-decoder":
        if st.session_state.get(session.GEN_PROMPT) in (DEFAULT_PROMPT, DEFAULT_QUESTION):  # not a prefix
            st.session_state[session.GEN_PROMPT] = ""
        examples = {DEFAULT_TEXT} | {e.example for e in zoo.ZOO.values() if e.example}
        if st.session_state.get(session.GEN_SOURCE) in examples | {None}:
            st.session_state[session.GEN_SOURCE] = default_text(loaded)
        source = kept("text_area", "Source (the encoder reads it)", session.GEN_SOURCE, "", height=80)
        prompt = kept(
            "text_input", "Decoder prefix (optional: the decoder continues from it)", session.GEN_PROMPT, ""
        )
        return prompt, False, source
    default = DEFAULT_QUESTION if loaded.card.chat_template else DEFAULT_PROMPT
    # coming from another model, its default (or an encoder-decoder's empty prefix) becomes this model's
    if st.session_state.get(GEN_FOR) != loaded.request:
        st.session_state[GEN_FOR] = loaded.request
        if st.session_state.get(session.GEN_PROMPT) in ("", DEFAULT_PROMPT, DEFAULT_QUESTION):
            st.session_state[session.GEN_PROMPT] = default
    prompt = kept("text_area", "Prompt", session.GEN_PROMPT, default, height=80)
    chat = False
    if loaded.card.chat_template:
        chat = kept(
            "toggle", "Use the chat template (the prompt is a user's message)", session.GEN_CHAT, True
        )
    else:
        st.caption(f"{md(loaded.card.name)} has no chat template: the model continues the prompt as it is.")
    return prompt, chat, source


def steering_panel(loaded):
    """The steering controls (decoders, and encoder-decoders in their encoder): the vector of one prompt
    against another at a layer, times a coefficient; returns the Steer, or None when off or not possible
    here."""
    if loaded.card.family not in ("decoder", "encoder-decoder"):
        return None
    seq2seq = loaded.card.family == "encoder-decoder"
    title = "the encoder's residual stream" if seq2seq else "the residual stream at every step"
    with st.expander(f"Steering: add a vector to {title}"):
        on = kept("toggle", "Steer", session.GEN_STEER, False)
        c1, c2 = st.columns(2)
        plus = kept("text_input", "Toward (';' separates several prompts)", session.GEN_STEER_PLUS,
                    "I love you", c1)  # fmt: skip
        minus = kept("text_input", "Away from", session.GEN_STEER_MINUS, "I hate you", c2)
        n = anatomy.of(loaded.model).n_layers("encoder" if seq2seq else "decoder")
        where = "At the input of encoder layer" if seq2seq else "At the input of layer"
        layer = kept("selectbox", where, session.GEN_STEER_LAYER, n // 5, c1, options=list(range(n)),
                     help=help_for("residual stream"))  # fmt: skip
        coef = kept("number_input", "Coefficient (0: no change)", session.GEN_STEER_COEF, 4.0, c2,
                    min_value=-100.0, max_value=100.0, step=0.5)  # fmt: skip
        st.caption(
            "The vector is the mean of the residual stream entering that layer over the first prompts' "
            "tokens minus the same for the second; every pass of the model adds the coefficient times it "
            "there, at every position."
            + (" An encoder-decoder is steered in its encoder: the prompts are read as sources, and the "
               "vector is added at every source position." if seq2seq else "")
        )  # fmt: skip
    feature = feature_steering_panel(loaded)
    if feature is not None:
        return feature
    if not on:
        return None
    key = (loaded.request, plus, minus, layer, coef)
    found = st.session_state.get(STEER_DONE)
    if found is None or found[0] != key:
        try:
            with session.model_turn(loaded, "a steering vector"):
                made = steering.build(loaded, plus.split(";"), minus.split(";"), int(layer), float(coef))
        except InputError as err:
            st.error(md(err))
            return None
        found = (key, made)
        st.session_state[STEER_DONE] = found
    return found[1]


def feature_steering_panel(loaded):
    """Steering by one feature of the model's sparse autoencoder (the one trained here, or the folder
    chosen on the Features page): added, or clamped to a value, at every step. Returns the FeatureSteer,
    or None when off or when the model has no SAE."""
    folder = st.session_state.get(session.FEAT_SAE) or zoo.sae_folder(loaded.request)
    if not folder:
        return None
    with st.expander("Feature steering: add or clamp a feature of the sparse autoencoder at every step"):
        on = kept("toggle", "Steer with a feature", session.GEN_FEAT_STEER, False)
        c1, c2, c3 = st.columns(3)
        opened = int(st.session_state.get(session.FEATURE, 0))  # the feature the Features page opened
        feature = kept("number_input", "Feature", session.GEN_FEAT, opened, c1, min_value=0)
        mode = kept("radio", "How", session.GEN_FEAT_MODE, "add", c2, options=["add", "clamp"],
                    format_func={"add": "add value × its direction",
                                 "clamp": "set its activation to value"}.get,
                    horizontal=True)  # fmt: skip
        value = kept("number_input", "Value", session.GEN_FEAT_VALUE, 8.0, c3, min_value=-1000.0,
                     max_value=1000.0, step=1.0)  # fmt: skip
        st.caption(
            "The feature's decoder direction is added to the residual stream the SAE reads, at every "
            "position but a prompt's first and on every pass; clamping adds (value − its activation there) "
            "times it. The Features page shows what a feature does. While it is on, the prompt steering "
            "above is off."
        )
    if not on:
        return None
    key = (loaded.request, str(folder), int(feature), mode, float(value))
    found = st.session_state.get(FEAT_STEER_DONE)
    if found is None or found[0] != key:
        from explorer.sae import features
        from explorer.sae.sae import load

        try:
            sae = load(folder)
            features.reads(loaded, sae)
            if not 0 <= int(feature) < sae.d_sae:
                raise InputError(f"This SAE has features 0 to {sae.d_sae - 1}, not {int(feature)}.")
        except InputError as err:
            st.error(md(err))
            return None
        found = (key, features.FeatureSteer(sae, int(feature), float(value), mode))
        st.session_state[FEAT_STEER_DONE] = found
    return found[1]


def steer_label(steer) -> str:
    if hasattr(steer, "feature"):
        how = f"+ {steer.value:g} ×" if steer.mode == "add" else f"clamped to {steer.value:g}:"
        return f"{how} feature #{steer.feature} at layer {steer.layer}"
    return f"layer {steer.layer}, × {steer.coef:g}"


def current_stepper(loaded, prompt: str, chat: bool, source: str | None, steer=None) -> Stepper | None:
    """This user's stepper for these inputs; a new one when the model, the inputs or the steering
    change."""
    key = (loaded.request, prompt, chat, source, None if steer is None else id(steer))
    found = st.session_state.get(session.STEPPER)
    if found is not None and found[0] == key:
        return found[1]
    try:
        with session.model_turn(loaded, "reading a prompt"), st.spinner("Reading the prompt …"):
            stepper = Stepper.start(loaded, prompt, chat=chat, source=source, steer=steer)
    except InputError as err:
        st.error(md(err))
        return None
    st.session_state[session.STEPPER] = (key, stepper)
    return stepper


def text_html(stepper: Stepper) -> str:
    """The text so far, token by token; a character whose bytes several tokens hold is shown whole."""
    joined = split_characters(token_bytes(stepper.loaded.tokenizer, stepper.ids))
    return sequence_html(stepper.prompt_tokens, stepper.steps, joined)


def do(action, *args) -> None:
    """Runs a stepper action; a refusal (end of text, bad settings) becomes a message."""
    try:
        with session.model_turn(action.__self__.loaded, "a step"):  # a Stepper method
            action(*args)
    except InputError as err:
        st.session_state[session.GEN_MESSAGE] = str(err)


SHARED = (session.GEN_PROMPT, session.GEN_SOURCE, session.GEN_CHAT, session.GEN_MODE, session.GEN_SEED,
          session.GEN_TEMPERATURE, session.GEN_TOP_K, session.GEN_TOP_P, session.GEN_REPETITION,
          session.GEN_PICKS, session.GEN_STEER, session.GEN_STEER_PLUS, session.GEN_STEER_MINUS,
          session.GEN_STEER_LAYER, session.GEN_STEER_COEF, session.GEN_ATTR,
          session.GEN_ATTR_METHOD, session.GEN_FEAT_STEER, session.GEN_FEAT, session.GEN_FEAT_MODE,
          session.GEN_FEAT_VALUE)  # fmt: skip


def replay(stepper: Stepper, settings: Settings) -> None:
    """Generates the tokens a shared link carries, each as it was chosen: by the settings (checked to
    give the same token) or picked by hand."""
    picks = st.session_state.pop(session.GEN_PICKS, None)
    if not picks or stepper.steps:
        return
    bar = st.progress(0.0, text="Replaying the link's generation …")
    differ = 0
    try:
        for i, (token_id, forced) in enumerate(picks):
            with session.model_turn(stepper.loaded, "replaying a link"):
                if forced:
                    stepper.step(settings, token_id)
                elif stepper.step(settings).token_id != token_id:
                    branches = len(stepper.branches)
                    stepper.undo(len(stepper.steps) - 1)
                    del stepper.branches[branches:]  # the settings' token was never the link's
                    stepper.step(settings, token_id)
                    differ += 1
            bar.progress(
                (i + 1) / len(picks), text=f"Replaying the link's generation: {i + 1} of {len(picks)}"
            )
            if stepper.finished:
                break
    except InputError as err:
        st.session_state[session.GEN_MESSAGE] = f"The link's generation stopped early: {err}"
    bar.empty()
    if differ:
        st.warning(
            f"{differ} of the link's tokens are not what these settings choose; they were placed as the link "
            "has them (shown as picked by hand)."
        )


def controls(stepper: Stepper, settings: Settings, text_box) -> None:
    c1, c2, c3, c4 = st.columns([1, 2, 2, 1])
    if c1.button("Step", type="primary", disabled=bool(stepper.finished)):
        do(stepper.step, settings)
        if stepper.finished:
            st.rerun()  # Step above was drawn enabled: the end of the text disables it
    n = kept(
        "number_input",
        "Steps to run",
        session.GEN_STEPS,
        10,
        c2,
        min_value=1,
        label_visibility="collapsed",
    )
    if n > MAX_RUN:  # no max_value on the box: past it the browser shows a red mark and no reason
        c2.warning(f"At most {MAX_RUN} steps per run ({int(n):,} asked for).")
        n = MAX_RUN
    if c2.button(f"Run {n} steps", disabled=bool(stepper.finished)):
        bar = st.progress(0.0, text="Generating …")
        for i in range(int(n)):
            try:
                with session.model_turn(stepper.loaded, "a step"):  # per step: other sessions go between
                    stepper.step(settings)
            except InputError as err:
                st.session_state[session.GEN_MESSAGE] = str(err)
                break
            text_box.html(text_html(stepper))  # the text streams in
            bar.progress((i + 1) / n, text=f"Generating: {i + 1} of {n} tokens")
            if stepper.finished:
                break
        bar.empty()
        if stepper.finished:
            st.rerun()  # Step and Run were drawn enabled before the run reached the end of the text
    if stepper.steps:
        options = list(range(len(stepper.steps)))
        to = c3.selectbox(
            "Undo back to",
            options,
            index=len(options) - 1,  # no key: the default follows the latest step
            format_func=lambda i: f"after step {i}" if i else "the prompt (step 0)",
        )
        if c3.button("Undo"):
            do(stepper.undo, to)
            st.rerun()  # Step and Run above were drawn for the old state (disabled at the end of text)
    if c4.button("Reset"):
        do(stepper.undo, 0)
        stepper.branches.clear()
        st.rerun()


def main() -> None:
    st.title("Generate, one token at a time")
    loaded = session.current_model()
    if loaded is None:
        no_model("Load a model in the sidebar to generate with it.")
        return
    if loaded.card.family == "encoder":
        st.warning(
            f"{md(loaded.card.name)} is an encoder: it reads a text and represents it, but has no head that "
            "writes the next token. Pick a decoder (SmolLM2, Gemma) or an encoder-decoder in the sidebar."
        )
        share()  # the model in the URL: the link opens this page on the same model
        return
    prompt, chat, source = inputs(loaded)
    if chat:
        try:
            with st.expander("The prompt as the model reads it (chat template)"):
                st.code(templated(loaded, prompt), language=None, wrap_lines=True)
        except InputError as err:
            st.error(md(err))
            return
    steer = steering_panel(loaded)
    stepper = current_stepper(loaded, prompt, chat, source, steer)
    if stepper is None:
        return
    settings = settings_panel()
    try:
        settings.check()
    except InputError as err:
        st.error(md(err))
        return
    extra = stepper.extra_rules(settings)
    if extra:
        st.caption(
            "Also applied, from the checkpoint's generation config (as generate() would): "
            f"{md(', '.join(extra))}."
        )
    replay(stepper, settings)
    st.subheader("The text so far")
    text_box = st.empty()
    controls(stepper, settings, text_box)
    share(*SHARED, **{session.GEN_PICKS: tuple((s.token_id, s.how == "picked") for s in stepper.steps)})
    text_box.html(text_html(stepper))
    st.caption(
        "Prompt in grey; each generated token on the colour of the probability it had when chosen "
        "(red: unlikely, green: likely). Hover a token for its numbers."
    )
    message = st.session_state.pop(session.GEN_MESSAGE, None) or stepper.finished
    if message:
        st.info(md(message))

    left, right = st.columns([3, 2])
    with left:
        cands = stepper.candidates(settings)
        st.plotly_chart(candidates_figure(cands, f"Next token after {len(stepper.ids)} tokens"), key="next")
        if steer is not None:
            with session.model_turn(loaded, "the unsteered pass"):
                plain = stepper.unsteered()
            st.plotly_chart(
                paired_bars([c.token for c in cands], [c.prob for c in cands],
                            [float(plain[c.token_id]) for c in cands], ("steered", "without steering"),
                            f"The same candidates, steered and not ({steer_label(steer)})"),
                key="steered",
            )  # fmt: skip
            top = plain.topk(3)
            names = display_tokens(loaded.tokenizer, top.indices.tolist())
            best = ", ".join(f"{md(t)} ({p:.3f})" for t, p in zip(names, top.values.tolist()))
            st.caption(f"Without steering the most likely would be: {best}")
        st.caption("Pick a candidate to force it as the next token:")
        cols = st.columns(5)
        for i, c in enumerate(cands):
            if cols[i % 5].button(f"{i + 1}. {c.token}", key=f"pick_{i}", disabled=bool(stepper.finished)):
                do(stepper.step, settings, c.token_id)
                st.rerun()
    with right:
        if stepper.steps:
            last = stepper.steps[-1]
            how = {
                "greedy": "greedy: the most likely token after your settings",
                "sampled": f"sampled (seed {last.seed})",
                "picked": "picked by you",
            }[last.how]
            st.metric(f"Step {last.index + 1}: chosen token", last.token)
            st.write(
                f"How: {md(how)}. Rank {last.rank} under the raw logits; p = {last.prob:.4f} raw, "
                f"{last.prob_processed:.4f} after the settings."
            )
            st.plotly_chart(
                candidates_figure(list(last.top), "Its candidates", chosen=last.token_id),
                key="last_candidates",
            )
    if stepper.steps:
        attention_of_last(stepper)
    token_attribution(loaded, stepper, steer)
    if stepper.branches:
        st.plotly_chart(tree_figure(stepper.steps, stepper.branches), key="tree")
        names = [
            f"branch {i + 1}, from step {b.fork(stepper.steps)}: "
            + "".join(s.token for s in b.path[b.fork(stepper.steps) :])[:60]
            for i, b in enumerate(stepper.branches)
        ]
        chosen = st.selectbox("Go back to a branch", list(range(len(names))), format_func=lambda i: names[i])
        if st.button("Switch to this branch"):
            do(stepper.switch, stepper.branches[chosen])
            st.rerun()


def token_attribution(loaded, stepper: Stepper, steer) -> None:
    """Each generated token's logit, as it was generated, attributed to the tokens it was computed from
    (explorer.analyses.attribution.per_token); rows already computed are kept as generation goes on."""
    st.subheader("Where each generated token came from", help=help_for("input attribution"))
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    on = kept("toggle", "Attribute the generated tokens", session.GEN_ATTR, False, c1)
    method = kept("selectbox", "Method", session.GEN_ATTR_METHOD, "input_x_gradient", c2,
                  options=list(attribution.METHODS), format_func=attribution.METHODS.get)  # fmt: skip
    seq2seq = stepper.source_ids is not None
    over = "the source's tokens" if seq2seq else "the tokens before it"
    st.caption(
        f"Each generated token's logit, at the step that chose it, attributed over {over} by Captum on the "
        "token embeddings" + (", with the steering on" if steer is not None else "") + ". One backward pass "
        f"per token (integrated gradients: {attribution.DEFAULT_STEPS} in one batch; occlusion: a forward "
        "pass per input token)."
    )  # fmt: skip
    if not on:
        return
    if not stepper.steps:
        st.info("Generate a token to see where it came from.")
        return
    key = (loaded.request, None if steer is None else id(steer))
    done = st.session_state.get(ATTR_DONE)
    before = done[1] if done is not None and done[0] == key else None
    bar = st.progress(0.0, text="Attributing the generated tokens …")

    def report(n: int, total: int) -> None:
        bar.progress(n / total, text=f"Attributing the generated tokens: {n} of {total}")

    try:
        with session.model_turn(loaded, "attributing the generated tokens"):
            found = attribution.per_token(
                loaded, stepper.ids, len(stepper.prompt_ids), method, stepper.source_ids,
                hooks=(steer.hook(loaded.model),) if steer is not None else (), progress=report,
                before=before,
            )  # fmt: skip
    except InputError as err:
        bar.empty()
        st.error(md(err))
        return
    bar.empty()
    st.session_state[ATTR_DONE] = (key, found)
    scale = np.nanmax(np.abs(found.scores), axis=1, keepdims=True)
    rows = [f"{i + 1}: {t}" for i, t in enumerate(found.generated)]
    st.plotly_chart(
        heatmap(found.scores / np.maximum(scale, 1e-12),
                f"{attribution.METHODS[method]}: each generated token (row) over {over} (rows scaled to "
                "their top)", rows, list(found.tokens), "generated token", "input token",
                colorscale="Viridis" if method == "saliency" else "RdBu", symmetric=method != "saliency"),
        key="token_attribution",
    )  # fmt: skip
    if method == "integrated_gradients":
        rel = [abs(d) / max(abs(float(np.nansum(r)) - d), 1e-12) for r, d in zip(found.scores, found.deltas)]
        worst = int(np.argmax(rel))
        line = f"Integrated gradients' convergence delta: at most {rel[worst]:.1%} (token {worst + 1})."
        if rel[worst] > 0.01:
            st.warning(line + " More than 1 %: the model's output is rough along the path from the baseline.")
        else:
            st.success(line)


def attention_of_last(stepper: Stepper) -> None:
    last = stepper.steps[-1]
    n_heads = last.attention.shape[1]
    options = ["mean"] + list(range(n_heads))
    head = kept(
        "selectbox",
        "Head",
        session.GEN_HEAD,
        "mean",
        options=options,
        format_func=lambda h: "mean over heads" if h == "mean" else f"head {h}",
    )
    att = last.attention.mean(axis=1) if head == "mean" else last.attention[:, head]
    tokens = stepper.tokens[: att.shape[-1]]
    label = "mean over heads" if head == "mean" else f"head {head}"
    st.plotly_chart(
        layer_position_heatmap(
            att,
            tokens,
            f"What the new token “{last.token}” attends to, per layer ({label})",
            "weight",
            zmin=0.0,
        ),
        key="step_attention",
    )
    if last.cross_attention is not None:
        cross = last.cross_attention.mean(axis=1) if head == "mean" else last.cross_attention[:, head]
        st.plotly_chart(
            layer_position_heatmap(
                cross,
                stepper.source_tokens,
                f"Its cross-attention over the source, read while writing the token after “{last.token}” "
                f"({label})",
                "weight",
                zmin=0.0,
            ),
            key="step_cross",
        )


main()
