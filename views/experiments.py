"""The Experiments page: knock out heads, patch activations, compare two models, see expert routing,
attribute a logit to heads and blocks."""

import numpy as np
import pandas as pd
import streamlit as st

from explorer import session
from explorer.analyses import atp, attribution, compare, dla, experiments, routing
from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError, LoadError
from explorer.figures.attention import token_heatmap
from explorer.figures.experiments import (
    head_scan_figure,
    paired_bars,
    patching_figure,
    routing_figure,
    usage_figure,
)
from explorer.figures.learn import heatmap
from explorer.figures.lessons import grouped_bars
from explorer.models import zoo
from explorer.models.loading import LoadRequest
from explorer.web.display import md
from views.common import chips, kept, model_or_stop, share, shared_text

EXPERIMENT = session.EXPERIMENT
# the ablation reads the workspace's text (an encoder-decoder's source and decoder prefix)
ABL_TEXT, ABL_PREFIX, ABL_TARGET = session.TEXT, session.TARGET, session.ABL_TARGET
FACT, FACT_TARGET = "The Eiffel Tower is in the city of", " Paris"  # the example a button puts in
# causal tracing's example: (clean, corrupted, decoder prefix, target, foil)
PATCH_EXAMPLE = (FACT, "The Colosseum is in the city of", "", " Paris", " Rome")
ABL_STACK, ABL_MODE, ABL_HEADS, ABL_TOP = "exp_abl_stack", session.ABL_MODE, "exp_abl_heads", "exp_abl_top"
PATCH_CLEAN, PATCH_CORRUPT = session.PATCH_CLEAN, session.PATCH_CORRUPT
PATCH_TARGET, PATCH_FOIL, PATCH_PREFIX = session.PATCH_TARGET, session.PATCH_FOIL, "exp_patch_prefix"
PATCH_STACK, PATCH_KINDS, PATCH_APPROX = "exp_patch_stack", "exp_patch_kinds", "exp_patch_approx"
CMP_SOURCE, CMP_REF, CMP_REQUEST = "exp_cmp_source", "exp_cmp_ref", "exp_cmp_request"
CMP_TEXT, CMP_LAYER, CMP_HEAD = "exp_cmp_text", "exp_cmp_layer", "exp_cmp_head"  # + _0 / _1 per model
ROUTE_TEXT, ROUTE_LAYER = "exp_route_text", "exp_route_layer"

KINDS = ["Head ablation", "Activation patching", "Compare two models", "Expert routing",
         "Direct logit attribution", "Input attribution"]  # fmt: skip
ATTR_METHODS, ATTR_STEPS, ATTR_DONE = "exp_attr_methods", "exp_attr_steps", "exp_attr"
DLA_TARGET, DLA_FOIL, DLA_PREFIX, DLA_DONE = session.DLA_TARGET, session.DLA_FOIL, "exp_dla_prefix", "exp_dla"
SOURCES = {"embedded": "Embedded", "hub": "Hub id", "folder": "Folder", "gguf": "GGUF file"}

st.title("Experiments")
st.caption(
    "Attention shows where a model looks; an experiment shows what that does. Knock out heads and see "
    "the next-token prediction change, copy activations from one prompt into another (causal tracing), "
    "put two models side by side, or see which experts a mixture-of-experts model sends each token to."
)
loaded = model_or_stop()
kind = kept("radio", "Experiment", EXPERIMENT, KINDS[0], options=KINDS, horizontal=True)


def progress_bar(what: str):
    bar = st.progress(0.0, text=what)

    def report(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{what}: {done:,} of {total:,}")

    return bar, report


def stack_choice(key: str, label: str):
    """Encoder-decoders: which stack's heads/positions to act on; None otherwise."""
    both = experiments.stacks(loaded.model)
    if len(both) < 2:
        return None
    return kept("radio", label, key, both[0], options=list(both), horizontal=True)


def usable() -> bool:
    try:
        experiments.check_model(loaded.model)
    except experiments.ExperimentError as err:
        st.warning(md(err))
        return False
    return True


def ablation() -> None:
    if not usable():
        return
    model = loaded.model
    seq2seq = loaded.card.family == "encoder-decoder"
    masked = loaded.card.family == "encoder"
    left, right = st.columns([3, 1])
    mask = loaded.tokenizer.mask_token or "[MASK]"
    example = f"The capital of France is {mask}." if masked else FACT
    entry = zoo.entry_of(loaded.request)
    one_job = entry is not None and entry.job  # the date normalizer: a fact to recall is not its job
    if not one_job and left.button("Example: a fact to recall", help=f"Puts “{example}” in the text (for "
                                   f"every page) and “{FACT_TARGET}” as the target."):  # fmt: skip
        st.session_state[ABL_TEXT], st.session_state[ABL_TARGET] = example, FACT_TARGET
    with left:
        text = shared_text(loaded, height=68)  # the workspace's text, the same on every page
    prefix = ""
    if seq2seq:
        prefix = kept("text_input", "Target prefix (the decoder's start; its next token is read)",
                      ABL_PREFIX, "", left)  # fmt: skip
    target = kept("text_input", "Target token (empty: the model's own prediction)", ABL_TARGET, "", right,
                  help="The token whose probability you follow, with its leading space.")  # fmt: skip
    mode = kept("radio", "Knock out by", ABL_MODE, "zero", right, options=["zero", "mean"],
                format_func={"zero": "zero", "mean": "its mean output over the text"}.get)  # fmt: skip
    stack = stack_choice(ABL_STACK, "Heads of the")
    try:
        probe = experiments.prepare(loaded, text, prefix, stack)
        if target.strip():
            tgt = experiments.target_token(loaded, probe, target)
        else:  # the model's own prediction
            with session.model_turn(loaded, "a forward pass"):
                best = int(experiments.clean_logits(loaded, probe).argmax())
            word = display_tokens(loaded.tokenizer, [best])[0]
            tgt = experiments.Target(best, word, f"Target: the model's own prediction, {word}.")
    except InputError as err:
        st.error(md(err))
        return
    if tgt.note:
        st.info(md(tgt.note))
    where = "the mask" if masked else f"token {probe.position} ({probe.read_tokens[probe.position]})"
    st.caption(
        f"{len(probe.ids)} tokens; the prediction read is the next token after {md(where)}. "
        f"Target: {md(tgt.token)} (id {tgt.token_id})."
    )
    n_layers, n_heads = experiments.n_layers(model, probe.stack), experiments.n_heads(model, probe.stack)
    options = [f"{layer}.{h}" for layer in range(n_layers) for h in range(n_heads)]
    cols = st.columns([3, 1])
    chosen = kept("multiselect", "Heads to knock out (layer.head)", ABL_HEADS, [], cols[0], options=options)
    k = kept("slider", "Top tokens", ABL_TOP, 10, cols[1], min_value=3, max_value=30)
    heads = experiments.parse_heads(",".join(chosen))
    with session.model_turn(loaded, "a head ablation"):
        result = experiments.ablate(loaded, probe, heads, mode, tgt)
    before, after = (
        experiments.top_tokens(loaded, result.before, k),
        experiments.top_tokens(loaded, result.after, k),
    )
    ids = list(dict.fromkeys([i for i, _, _ in before] + [i for i, _, _ in after]))
    names = {i: s for i, s, _ in before + after}
    m = st.columns(3)
    m[0].metric(f"log p({tgt.token}) before", f"{result.before[tgt.token_id]:.3f}")
    m[1].metric(f"after ({len(heads)} heads off)", f"{result.after[tgt.token_id]:.3f}",
                delta=f"{result.delta_logprob:+.3f}")  # fmt: skip
    m[2].metric("KL(before ‖ after)", f"{result.kl:.4f} nats")
    st.plotly_chart(
        paired_bars([names[i] for i in ids], [float(np.exp(result.before[i])) for i in ids],
                    [float(np.exp(result.after[i])) for i in ids], ("all heads on", "heads knocked out"),
                    "Next-token probabilities before and after"),
        key="exp-ablation-bars",
    )  # fmt: skip
    if not heads:
        st.caption(
            "No head chosen: both distributions are the model's own. Pick heads above, or scan them all."
        )

    st.subheader("Head scan: every head knocked out on its own")
    total = n_layers * n_heads
    key = (loaded.request, text, prefix, probe.stack, tgt.token_id, mode)
    if st.button(f"Scan all {total} heads", type="primary"):
        bar, report = progress_bar(f"Knocking out each of {total} heads")
        try:  # the model's turn, given up between batches to sessions that wait (explorer.serving.turns)
            with session.model_turn(loaded, "a head scan"):
                scan = experiments.scan_heads(loaded, probe, tgt, mode, report)
        except InputError as err:
            st.error(md(err))
            return
        finally:
            bar.empty()
        session.store().put(key, scan, scan.nbytes)
    # kept in the server's store: a link to this scan, or another session asking for it, shows it at once
    scan = session.store().get(key)
    if scan is None:
        st.caption(
            "Not run on this server for this text, target and way of knocking out (a link opens here when "
            "the scan it shows has not run, or was dropped to free memory): press the button to run it. It "
            "runs the text once per head, in batches; the model stays shared with other sessions."
        )
        return
    st.plotly_chart(
        head_scan_figure(scan.delta_logprob,
                         f"Change in log p({tgt.token}) when one head is knocked out ({mode})"),
        key="exp-scan",
    )  # fmt: skip
    flat = [(float(scan.delta_logprob[a, b]), a, b) for a in range(n_layers) for b in range(n_heads)]
    worst = sorted(flat)[:8]
    st.caption(
        f"log p({md(tgt.token)}) with every head on: {scan.base_logprob:.3f}. Red heads help the target: "
        "removing them lowers its probability. The heads that matter most:"
    )
    st.dataframe(
        pd.DataFrame({"layer": [a for _, a, _ in worst], "head": [b for _, _, b in worst],
                      "Δ log-prob": [round(d, 4) for d, _, _ in worst],
                      "KL (nats)": [round(float(scan.kl[a, b]), 4) for _, a, b in worst]}),
        hide_index=True,
    )  # fmt: skip


def prediction_inputs() -> tuple[str, str, str, str | None]:
    """The inputs both attributions read: the workspace's text (and an encoder-decoder's decoder prefix),
    the target token (empty: the model's own prediction, resolved here) and the foil (None: none).
    InputError for a text the model cannot read."""
    left, right = st.columns([3, 1])
    with left:
        text = shared_text(loaded, height=68)  # the workspace's text, the same on every page
    prefix = ""
    if loaded.card.family == "encoder-decoder":
        prefix = kept("text_input", "Target prefix (the decoder's start)", DLA_PREFIX, "", left)
    target = kept("text_input", "Target token (empty: the model's own prediction)", DLA_TARGET, "", right,
                  help="The token whose logit is attributed, with its leading space.")  # fmt: skip
    foil = kept("text_input", "Foil (empty: none)", DLA_FOIL, "", right,
                help="A token to compare with: the difference target − foil is attributed.")  # fmt: skip
    if not target.strip():  # the model's own prediction
        probe = experiments.prepare(loaded, text, prefix, stack=None)
        with session.model_turn(loaded, "a forward pass"):
            best = int(experiments.clean_logits(loaded, probe).argmax())
        target = loaded.tokenizer.decode([best])
    return text, prefix, target, foil if foil.strip() else None


def logit_attribution() -> None:
    """Direct logit attribution of the workspace's text: each head's and block's direct share of
    logit(target) - logit(foil) at the predicting position (explorer.analyses.dla)."""
    try:
        text, prefix, target, foil = prediction_inputs()
        key = (loaded.request, text, prefix, target, foil)
        found = st.session_state.get(DLA_DONE)
        if found is None or found[0] != key:
            with session.model_turn(loaded, "an attribution"), st.spinner("Attributing the logit …"):
                found = (key, dla.attribute(loaded, text, target, foil, prefix))
            st.session_state[DLA_DONE] = found
    except InputError as err:  # bad text or token, or a model this does not decompose
        st.warning(md(err))
        return
    found = found[1]
    for note in (found.target.note, found.foil.note if found.foil else ""):
        if note:
            st.info(md(note))
    what = (
        f"logit({found.target.token}) − logit({found.foil.token})"
        if found.foil
        else f"logit({found.target.token})"
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("The model's own", f"{found.logit_diff:+.4f}", help=md(what))
    c2.metric("Sum of the parts below", f"{found.total:+.4f}")
    c3.metric("Position read", f"{found.position}: {found.tokens[found.position]}")
    read = found.tokens[found.position] == loaded.tokenizer.mask_token
    st.caption(
        f"{md(what)} at the position {'of the mask' if read else 'that predicts the next token'}, split into "
        "what each part writes to the "
        f"residual stream, read through {found.route}. Each part's effect through later layers is not in "
        "its value."
    )
    st.plotly_chart(head_scan_figure(found.heads().numpy(), f"Heads: direct effect on {what}", "logit"),
                    key="dla-heads")  # fmt: skip
    if any(p.name == "cross head" for p in found.parts):
        st.plotly_chart(head_scan_figure(found.heads("cross head").numpy(), f"Cross-attention heads: {what}",
                                         "logit"), key="dla-cross")  # fmt: skip
    layers = sorted({p.layer for p in found.parts if p.layer is not None})
    ffn_parts = ("ffn", "ffn norm bias")
    attn = [sum(p.value for p in found.parts if p.layer == i and p.name not in ffn_parts) for i in layers]
    mlp = [sum(p.value for p in found.parts if p.layer == i and p.name in ffn_parts) for i in layers]
    st.plotly_chart(grouped_bars([f"L{i}" for i in layers], {"attention (all heads and biases)": attn,
                                 "feed-forward": mlp}, f"Each block's direct effect on {what}", "logit"),
                    key="dla-blocks")  # fmt: skip
    rest = [p for p in found.parts if p.layer is None]
    st.caption(" · ".join(f"{md(p.name)}: {p.value:+.4f}" for p in rest))


def input_attribution() -> None:
    """Which input tokens the prediction comes from, by Captum's methods and attention rollout."""
    try:
        text, prefix, target, foil = prediction_inputs()
    except InputError as err:
        st.warning(md(err))
        return
    names = {**attribution.METHODS, attribution.ROLLOUT: "Attention rollout (for comparison)"}
    c1, c2 = st.columns([3, 1])
    methods = kept("multiselect", "Methods", ATTR_METHODS, list(names), c1, options=list(names),
                   format_func=names.get)  # fmt: skip
    steps = kept("number_input", "Integrated gradients: steps", ATTR_STEPS, attribution.DEFAULT_STEPS, c2,
                 min_value=4, max_value=1024, help="Points on the path, one batch.")  # fmt: skip
    # kept per method for these inputs only: new inputs start afresh (an earlier text's results were
    # kept for good before)
    inputs = (loaded.request, text, prefix, target, foil, int(steps))
    seen, done = st.session_state.get(ATTR_DONE, (None, {}))
    if seen != inputs:
        done = {}
        st.session_state[ATTR_DONE] = (inputs, done)
    found = {}
    try:
        for m in methods:
            if m not in done:
                with session.model_turn(loaded, "an attribution"), st.spinner(f"{names[m]} …"):
                    done[m] = attribution.attribute(loaded, text, target, m, foil, prefix, int(steps))
            found[m] = done[m]
    except InputError as err:
        st.warning(md(err))
        return
    if not found:
        st.info("Choose at least one method.")
        return
    first = next(iter(found.values()))
    if first.target.note:
        st.info(md(first.target.note))
    rows = np.stack([r.scores / max(float(np.abs(r.scores).max()), 1e-12) for r in found.values()])
    st.plotly_chart(
        heatmap(rows, f"What the prediction of {first.target.token} comes from (rows scaled to their top)",
                [names[m] for m in found], list(first.tokens), "method", "input token"),
        key="attr-map",
    )  # fmt: skip
    ig = found.get("integrated_gradients")
    if ig is not None:
        change = float(ig.scores.sum()) - ig.delta
        rel = abs(ig.delta) / max(abs(change), 1e-12)
        line = (f"Integrated gradients: the scores add up to {float(ig.scores.sum()):+.4f}; f(input) − "
                f"f(baseline) = {change:+.4f}; convergence delta {ig.delta:+.4f} ({rel:.1%}).")  # fmt: skip
        if rel > 0.01:
            st.warning(line + " More than 1 %: the model's output is rough along the path; more steps bring "
                       "it closer.")  # fmt: skip
        else:
            st.success(line)
    table = {"token": list(first.tokens), **{names[m]: np.round(r.scores, 4) for m, r in found.items()}}
    st.dataframe(pd.DataFrame(table), hide_index=True)


def patching() -> None:
    if not usable():
        return
    seq2seq = loaded.card.family == "encoder-decoder"
    if loaded.card.family == "encoder":
        st.info("Causal tracing reads a next-token prediction: load a decoder or an encoder-decoder.")
        return
    # the model's own example where it has one (the date normalizer: November against December); another
    # model's example, never edited, is replaced by this model's
    keys = (PATCH_CLEAN, PATCH_CORRUPT, PATCH_PREFIX, PATCH_TARGET, PATCH_FOIL)
    entry = zoo.entry_of(loaded.request)
    example = entry.patching if entry is not None and entry.patching else PATCH_EXAMPLE
    examples = [PATCH_EXAMPLE] + [e.patching for e in zoo.ZOO.values() if e.patching]
    if tuple(st.session_state.get(k) for k in keys) in examples or PATCH_CLEAN not in st.session_state:
        st.session_state.update(dict(zip(keys, example)))
    a, b = st.columns(2)
    clean = kept("text_input", "Clean prompt", PATCH_CLEAN, example[0], a)
    corrupt = kept("text_input", "Corrupted prompt (same number of tokens)", PATCH_CORRUPT, example[1], b)
    target = kept("text_input", "Target (the clean answer)", PATCH_TARGET, example[3], a)
    foil = kept("text_input", "Foil (the corrupted answer)", PATCH_FOIL, example[4], b)
    prefix = ""
    if seq2seq:
        prefix = kept("text_input", "Target prefix (the decoder's start)", PATCH_PREFIX, example[2], a)
    stack = stack_choice(PATCH_STACK, "Patch the")
    names = list(experiments.KIND_TITLES)
    kinds = kept("multiselect", "Activations to patch", PATCH_KINDS, names, options=names,
                 format_func=experiments.KIND_TITLES.get)  # fmt: skip
    try:
        pa, pb = experiments.patch_probes(loaded, clean, corrupt, prefix, stack)
    except InputError as err:
        st.error(md(err))
        return
    st.html(
        f'<div style="font-size:13px">clean, {len(pa.ids)} tokens: {chips_of(pa)}</div>'
        f'<div style="font-size:13px">corrupted, {len(pb.ids)} tokens: {chips_of(pb)}</div>'
    )
    if not kinds:
        st.info("Choose at least one kind of activation to patch.")
        return
    n_layers = experiments.n_layers(loaded.model, pa.stack)
    runs = n_layers * len(pa.ids) * len(kinds)
    key = (loaded.request, clean, corrupt, target, foil, prefix, pa.stack, tuple(kinds))
    if st.button(f"Patch {runs:,} (layer, position) activations", type="primary"):
        bar, report = progress_bar("Patching clean activations into the corrupted run")
        try:  # the model's turn, given up between batches to sessions that wait (explorer.serving.turns)
            with session.model_turn(loaded, "activation patching"):
                result = experiments.patch(loaded, clean, corrupt, target, foil, kinds, report, prefix, stack)
        except InputError as err:
            st.error(md(err))
            return
        finally:
            bar.empty()
        session.store().put(key, result, result.nbytes)
    result = session.store().get(key)  # kept in the server's store, as the head scan
    if result is None:
        st.caption(
            "Not run on this server for these prompts and tokens (a link opens here when the patching it "
            "shows has not run, or was dropped to free memory): press the button to run it. Each run "
            "copies one activation of the clean prompt into the corrupted one and measures how much of the "
            "logit difference logit(target) − logit(foil) comes back: 1 is the clean answer fully "
            "restored, 0 no effect."
        )
        return
    for note in (result.target.note, result.foil.note):
        if note:
            st.info(md(note))
    st.caption(
        f"logit({md(result.target.token)}) − logit({md(result.foil.token)}): clean {result.ld_clean:.3f}, "
        f"corrupted {result.ld_corrupt:.3f}. Restored share = (patched − corrupted) / (clean − corrupted)."
    )
    approx = None
    if kept("toggle", "Beside it, attribution patching (its gradient approximation: one forward and one "
            "backward pass)", PATCH_APPROX, False):  # fmt: skip
        try:
            approx = session.shared_run(
                loaded, ("atp", *key), "attribution patching", "One forward and one backward pass …",
                lambda: atp.approximate(loaded, clean, corrupt, target, foil, kinds, prefix, stack),
            )  # fmt: skip
        except InputError as err:
            st.error(md(err))
    for name in result.restored:
        title = f"Restored share: {experiments.KIND_TITLES[name]}"
        exact = patching_figure(result.restored[name], result.tokens, title)
        if approx is None:
            st.plotly_chart(exact, key=f"exp-patch-{name}")
            continue
        left, right = st.columns(2)
        left.plotly_chart(exact, key=f"exp-patch-{name}")
        right.plotly_chart(patching_figure(approx.restored[name], approx.tokens, f"{title}, approximated"),
                           key=f"exp-atp-{name}")  # fmt: skip
        r = atp.correlation(result.restored[name], approx.restored[name])
        gap = float(np.abs(result.restored[name] - approx.restored[name]).max())
        st.caption(f"{experiments.KIND_TITLES[name]}: correlation of the approximation with exact patching "
                   f"{r:.2f}; largest gap {gap:.2f}.")  # fmt: skip


def chips_of(probe) -> str:
    from explorer.runs.capture import Sequence

    return chips(Sequence(probe.ids, probe.tokens, tuple(False for _ in probe.ids)))


def second_model():
    """The second model's picker; the loaded second model or None."""
    cols = st.columns([1, 2, 1])
    source = kept("selectbox", "Second model from", CMP_SOURCE, "embedded", cols[0], options=list(SOURCES),
                  format_func=SOURCES.get)  # fmt: skip
    if source == "embedded":
        from explorer.models import zoo

        ref = kept("selectbox", "Embedded model", CMP_REF, "gemma-3-270m", cols[1], options=list(zoo.ZOO),
                   format_func=lambda n: f"{zoo.ZOO[n].title} · {zoo.ZOO[n].family}")  # fmt: skip
    else:
        ref = kept("text_input", SOURCES[source], f"{CMP_REF}_{source}", "", cols[1])
    cols[2].write("")
    if cols[2].button("Load second model", width="stretch"):
        request = LoadRequest(source, (ref or "").strip())
        try:
            session.fetch(request)  # beside this user's model, which stays as it is
        except LoadError as err:
            st.error(md(err))
            return None
        st.session_state[CMP_REQUEST] = request
    request = st.session_state.get(CMP_REQUEST)
    other = session.registry().get(request) if request is not None else None
    if other is None:
        st.info("Load a second model to compare (your model in the sidebar stays as it is).")
    return other


def comparison() -> None:
    other = second_model()
    if other is None:
        return
    text = kept("text_area", "Text", CMP_TEXT, "The capital of France is", height=68)
    cap_a = session.capture_for(loaded, text, None)  # kept in the server's store of captures
    cap_b = session.capture_for(other, text, None) if cap_a is not None else None
    if cap_a is None or cap_b is None:
        return
    name_a, name_b = loaded.card.name, other.card.name
    cols = st.columns(2)
    for col, name, cap in ((cols[0], name_a, cap_a), (cols[1], name_b, cap_b)):
        col.markdown(f"**{md(name)}**: {len(cap.sequence)} tokens")
        col.html(f'<div style="font-size:13px">{chips(cap.sequence)}</div>')
    if cap_a.next_token_logits is not None and cap_b.next_token_logits is not None:
        rows = compare.next_tokens(loaded, cap_a.next_token_logits, other, cap_b.next_token_logits, k=8)
        st.plotly_chart(
            paired_bars([r.token for r in rows], [r.prob_a for r in rows], [r.prob_b for r in rows],
                        (name_a, name_b), "Next-token probabilities, matched by the token's text"),
            key="exp-compare-bars",
        )  # fmt: skip
        st.caption(
            "The vocabularies differ, so tokens are matched by their text; no bar: that text is not one "
            "token of that model."
        )
    else:
        st.info("Next-token distributions need two models with a language-model head.")
    cols = st.columns(2)
    for i, (col, name, cap) in enumerate(((cols[0], name_a, cap_a), (cols[1], name_b, cap_b))):
        s = cap.attention_sets()[0] if cap.family != "encoder-decoder" else cap.attention_set("decoder")
        layer = kept(
            "selectbox", f"Layer of {name}", f"{CMP_LAYER}_{i}", 0, col, options=list(range(s.n_layers))
        )
        head = kept("selectbox", f"Head of {name}", f"{CMP_HEAD}_{i}", 0, col, options=list(range(s.n_heads)))
        col.plotly_chart(
            token_heatmap(s.maps[layer, head], s.queries.tokens, s.keys.tokens,
                          f"{name}: layer {layer}, head {head}"),
            key=f"exp-compare-attn-{i}",
        )  # fmt: skip


def expert_routing() -> None:
    if not routing.has_experts(loaded.model):
        st.info(
            f"{md(loaded.card.name)}: this model has no experts. Routing is for mixture-of-experts models "
            f"({routing.SUPPORTED}); load one with the sidebar."
        )
        return
    text = kept("text_area", "Text", ROUTE_TEXT, "The capital of France is Paris.", height=68)
    try:
        with session.model_turn(loaded, "expert routing"):
            r = routing.route(loaded, text)
    except InputError as err:
        st.error(md(err))
        return
    layer = kept("selectbox", "Layer", ROUTE_LAYER, r.layers[0], options=list(r.layers))
    i = r.layers.index(layer)
    st.plotly_chart(
        routing_figure(r.weights[i], r.tokens, f"Layer {layer}: the top-{r.top_k} experts of each token"),
        key="exp-routing",
    )
    st.plotly_chart(
        usage_figure(r.usage(), r.layers, "Tokens sent to each expert, per layer"), key="exp-usage"
    )
    st.caption(
        f"{r.n_experts} experts, {r.top_k} per token. Weight: the router's softmax over all experts, its "
        f"top {r.top_k} renormalized as the model does; empty cells were not chosen."
    )


RUN = {KINDS[0]: ablation, KINDS[1]: patching, KINDS[2]: comparison, KINDS[3]: expert_routing,
       KINDS[4]: logit_attribution, KINDS[5]: input_attribution}  # fmt: skip
RUN[kind]()
LINKED = {  # what a link to this page carries, per experiment
    KINDS[0]: (ABL_TEXT, ABL_PREFIX, ABL_TARGET, ABL_MODE),
    KINDS[1]: (PATCH_CLEAN, PATCH_CORRUPT, PATCH_TARGET, PATCH_FOIL),
    KINDS[4]: (ABL_TEXT, DLA_TARGET, DLA_FOIL),
    KINDS[5]: (ABL_TEXT, DLA_TARGET, DLA_FOIL),
}
share(EXPERIMENT, *LINKED.get(kind, ()))
