"""The lessons on what happens inside a block and after it: the feed-forward network as memory, the
residual stream and its norms, generating with the KV cache, sampling, what modern models changed, and
the questions a class asks. Builders as in explorer.lessons.reading."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from explorer.analyses import ffn as ffn_memory
from explorer.analyses import hidden
from explorer.analyses.tokens import display_tokens
from explorer.figures.learn import heatmap
from explorer.figures.lessons import grouped_bars, growth_times, step_times
from explorer.lessons import measure, reading
from explorer.lessons.live import Live
from explorer.lessons.questions import CHOICE, MANY, NUMBER, Question
from explorer.models import anatomy
from explorer.runs.capture import Capture
from explorer.web.display import md, plotly_text

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

MODERN = ("smollm2-135m-instruct", "gemma-3-270m")  # the embedded models the modern lesson compares
NEURONS = 8  # neurons of the FFN lesson's table
TOP_K, TOP_P = 10, 0.9  # the sampling lesson's filters
TEMPERATURES = (0.5, 1.0, 2.0)


def memory(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    model = loaded.model
    stack = ffn_memory.ffn_stack(model)
    layer = anatomy.of(model).n_layers(stack) // 2
    found = ffn_memory.capture(loaded, text, layer=layer)
    pos = len(found.ids) - 1
    acts = found.activations[layer][pos]  # (d_ff,)
    top = [int(i) for i in acts.abs().argsort(descending=True)[:NEURONS]]
    out = ffn_memory.out_vectors(model, stack, layer, top).float()  # (NEURONS, d_model)
    sizes = out.norm(dim=-1)
    written = (acts[top].abs() * sizes).tolist()
    names = [f"neuron {i}" for i in top]
    table = {"neuron": names, "activation a": [round(float(acts[i]), 4) for i in top],
             "‖value vector w‖": [round(float(s), 4) for s in sizes]}  # fmt: skip
    if ffn_memory.can_unembed(model):
        vals, ids, _, _ = ffn_memory.promoted(model, acts[top, None] * out, k=3)
        table["pushes up (a·w through the unembedding)"] = [
            " ".join(repr(t) for t in display_tokens(loaded.tokenizer, row.tolist())) for row in ids
        ]
    best = int(np.argmax(written))
    tok = md(found.tokens[pos])
    question = Question(
        f"At the last token (**{tok}**) of layer {layer}, which of these neurons adds the largest vector to "
        "the residual stream? (It adds a · w: multiply the two columns.)",
        CHOICE, names[best], options=tuple(names),
        why=f"|a| · ‖w‖ = {written[best]:.3f} for {names[best]}; the next is {sorted(written)[-2]:.3f}.",
    )  # fmt: skip
    fig = go.Figure(go.Histogram(x=acts.numpy(), nbinsx=80, marker_color="#2563eb"))
    fig.update_layout(title=dict(text=plotly_text(f"All {acts.numel():,} activations of layer {layer} at "
                                                  f"{found.tokens[pos]!r}"), x=0.01),
                      height=300, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")  # fmt: skip
    fig.update_yaxes(type="log", title_text="neurons")
    return Live(
        facts=(
            f"Layer {layer}'s feed-forward network has **{acts.numel():,} neurons** for d_model = "
            f"{out.shape[1]}: ${ffn_memory.formula(model)}$.",
            "Most neurons barely fire on a given token; the few that do each add their own value vector, "
            "scaled by how strongly they fire.",
        ),
        question=question,
        table=table,
        figures=(fig,),
    )


NORMS = ("LayerNorm", "RMSNorm")
PLACEMENTS = {
    "pre": "before each sub-layer (pre-norm)",
    "post": "after each residual add (post-norm)",
    "sandwich": "before and after each sub-layer (sandwich)",
    "post-out": "on each sub-layer's output only",
}


def norm_answer(model) -> str:
    """The option naming this model's norm and where it sits: the kind read from the first norm module of
    the first block (anatomy.norm_of), the placement from the anatomy."""
    a = anatomy.of(model)
    block = a.blocks(a.stack_names[0])[0]
    module = block.attn_norm or next(
        m for m in block.module.modules()
        if "norm" in type(m).__name__.lower() and isinstance(getattr(m, "weight", None), torch.Tensor)
    )  # fmt: skip
    kind = "LayerNorm" if anatomy.norm_of(module).centred else "RMSNorm"
    return f"{kind} {PLACEMENTS[a.placement]}"


def residual(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    norms = hidden.norms(cap.hidden_states)  # (layer+1, pos)
    tokens = cap.sequence.tokens
    answer = norm_answer(loaded.model)
    last = norms[:, -1]
    final = " (after the final norm, which the last row shows)" if hidden.final_norm(loaded.model) else ""
    options = tuple(f"{n} {p}" for n in NORMS for p in PLACEMENTS.values())
    question = Question(
        "Which normalization does this model use, and where does it sit?",
        CHOICE, answer, options=options,
        why=f"Read from the model's modules: {md(loaded.card.norm)}, {md(loaded.card.norm_placement)}.",
    )  # fmt: skip
    return Live(
        facts=(
            f"Each token's vector goes from the embedding through {norms.shape[0] - 1} layers; each "
            "sub-layer adds to it.",
            f"The last token's vector has size {last[0]:.1f} after the embedding and {last[-1]:.1f} at the "
            f"output{final}.",
        ),
        question=question,
        figures=(
            heatmap(
                np.log10(np.maximum(norms, 1e-6)),
                "log10 of the residual stream's size ‖x‖, per layer and token (row 0: the embeddings)",
                rows=[f"{i}" for i in range(norms.shape[0])],
                cols=list(tokens),
                row_title="layer",
                col_title="token",
                colorscale="Viridis",
                symmetric=False,
            ),
        ),  # fmt: skip
    )


def kv_cache(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    cost = measure.cache_cost(loaded, text)
    enc_dec = cap.family == "encoder-decoder"
    what = (
        "its cross-attention cache: the keys and values of the source, made once from the encoder's output"
        if enc_dec
        else "the keys and values of every token of the text, in every layer"
    )
    question = Question(
        f"After reading the text ({cost.prompt_len} tokens), how many numbers does the cache hold ({what})?",
        NUMBER, cost.numbers, unit="numbers",
        why=f"2 (keys and values) × {cost.layers} layers × {cost.kv_heads} key/value heads × d_head "
        f"{cost.d_head} × {cost.prompt_len} tokens = "
        f"{2 * cost.layers * cost.kv_heads * cost.d_head * cost.prompt_len:,}; "
        f"the model's cache holds {cost.numbers:,}.",
    )  # fmt: skip
    with_cache, without = sum(cost.cached[1:]), sum(cost.full[1:])
    agree = ("Both ways chose the same tokens." if cost.agree else
             "The two ways chose different tokens somewhere (rounding differs between them).")  # fmt: skip
    return Live(
        facts=(
            f"Measured now: {len(cost.tokens)} new tokens took {1000 * with_cache:.0f} ms with the cache "
            f"after the first, and {1000 * without:.0f} ms when the whole sequence is read again at "
            f"every step ({without / max(with_cache, 1e-9):.1f}×). {agree}",
            f"The model has {cost.layers} layers, {cost.kv_heads} key/value heads per layer, d_head = "
            f"{cost.d_head}; the text is {cost.prompt_len} tokens.",
        ),
        question=question,
        figures=(
            step_times(
                {"with the KV cache": cost.cached, "without (whole sequence each step)": cost.full},
                "Time per generated token, measured on this server",
            ),
        ),  # fmt: skip
        notes=(
            "The first step with the cache reads the whole prompt; every later step reads one token and "
            "the cached keys and values.",
        ),
    )


def sampling(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    logits = torch.from_numpy(np.asarray(cap.next_token_logits, dtype=np.float32))[None]  # (1, vocab)
    ids = torch.zeros((1, 1), dtype=torch.long)  # the warpers below do not read earlier tokens
    kept = LogitsProcessorList([TopKLogitsWarper(TOP_K), TopPLogitsWarper(TOP_P)])(ids, logits.clone())
    n_kept = int(torch.isfinite(kept).sum())
    probs = logits.softmax(-1)[0]
    top = probs.topk(TOP_K)
    names = [f"{r + 1}. {t}" for r, t in enumerate(display_tokens(loaded.tokenizer, top.indices.tolist()))]
    by_t = {}
    for t in TEMPERATURES:
        p = TemperatureLogitsWarper(t)(ids, logits.clone()).softmax(-1)[0]
        by_t[f"temperature {t:g}"] = p[top.indices].tolist()
    question = Question(
        f"The model samples the next token with top-k = {TOP_K}, then top-p = {TOP_P} (temperature 1). "
        "How many tokens stay in the draw?",
        NUMBER, n_kept, unit="tokens",
        why=f"Top-k keeps the {TOP_K} tokens in the chart; renormalized, the smallest set of them whose "
        f"probabilities reach {TOP_P} has {n_kept} (transformers' TopKLogitsWarper then TopPLogitsWarper).",
    )  # fmt: skip
    return Live(
        facts=(
            f"The model's {TOP_K} most likely next tokens hold {float(top.values.sum()):.1%} of the "
            "probability.",
            "Greedy decoding always takes the first; sampling draws from the distribution, reshaped by the "
            "temperature and cut by top-k and top-p.",
        ),
        question=question,
        table={"token": names, "probability": [round(float(v), 4) for v in top.values]},
        figures=(grouped_bars(names, by_t, "The same ten tokens at three temperatures", "probability"),),
    )


def _uses(card, a: anatomy.Anatomy) -> dict[str, list[str]]:
    ffn = a.blocks(a.stack_names[0])[0].ffn
    windows = [t for t in card.layer_types if t == "sliding_attention"]
    group = card.n_heads // max(card.n_kv_heads, 1)
    return {
        "what": ["grouped-query attention", "RMSNorm", "gated feed-forward (SwiGLU, GeGLU)", "sliding window",
                 "mixture of experts"],
        "this model": [
            (f"yes: {card.n_heads} query heads share {card.n_kv_heads} key/value head(s), {group} per group"
             if card.n_kv_heads < card.n_heads
             else f"no: {card.n_heads} query heads, one key/value head each"),
            "yes" if card.norm.startswith("RMSNorm") else f"no: {card.norm}",
            f"yes: {card.activation}" if ffn.gated else f"no: {card.activation}",
            (f"yes: {card.sliding_window} tokens on {len(windows) or card.n_layers} of {card.n_layers} layers"
             if card.sliding_window else "no"),
            "yes" if ffn.experts else "no",
        ],
        "what it buys": ["a smaller KV cache", "a cheaper norm", "a better FFN for its size",
                         "attention cost linear in the length on those "
                         "layers", "more parameters, same compute"],
    }  # fmt: skip


def modern(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    a = anatomy.of(loaded.model)
    att = a.attention(a.output_stack, 0)
    n, g = att.n_heads, att.group
    asked = n - 1
    names = [f"head {h}" for h in range(n)]
    share = tuple(names[h] for h in range(n) if h // g == asked // g)
    question = Question(
        f"Tick every query head that uses the same key/value head as query head {asked} (itself included).",
        MANY, share, options=tuple(names),
        why=f"{n} query heads over {att.n_kv_heads} key/value head(s): groups of {g} consecutive query heads "
        f"share one (transformers' repeat_kv); head {asked} is in group {asked // g}.",
    )  # fmt: skip
    card = loaded.card
    bytes_per = torch.finfo(next(loaded.model.parameters()).dtype).bits // 8
    per_token = {
        "this model": 2 * a.n_layers(a.output_stack) * att.n_kv_heads * att.d_head * bytes_per,
        "one key/value head per query head": 2 * a.n_layers(a.output_stack) * n * att.d_head * bytes_per,
    }
    fig = go.Figure(
        go.Bar(x=list(per_token), y=[v / 1024 for v in per_token.values()], marker_color="#2563eb")
    )
    fig.update_layout(title=dict(text="KV cache per token (KiB)", x=0.01), height=300,
                      margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")  # fmt: skip
    return Live(
        facts=(f"{md(card.name)}: {md(card.attention)}; {md(card.ffn)}; {md(card.norm)}.",),
        question=question,
        table=_uses(card, a),
        figures=(fig,),
        offers=tuple(name for name in MODERN if name != getattr(loaded.request, "ref", None)),
    )


def scaling(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    layer, _, m = reading.middle_layer_math(loaded, text)
    allowed = m.allowed.cpu()
    raw = m.scores.cpu()[:, allowed]  # (head, allowed cells) Q K^T
    bias = 0 if m.bias is None else m.bias.cpu()

    def entropy(scale: float) -> float:
        z = (m.scores.cpu() * scale + bias).masked_fill(~allowed, float("-inf"))
        p = z.softmax(-1)
        return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())

    grow = measure.growth(loaded, text)
    q, k = (m.q_rot, m.k_rot) if m.q_rot is not None else (m.q, m.k)  # what the scores read
    core = measure.core_times(q, k, m.v, m.scale, m.causal)
    divide = 1.0 / m.scale
    question = Question(
        f"By what number does this model divide Q·K^T before the softmax? (d_head = {m.q.shape[-1]})",
        NUMBER, divide, tolerance=1e-3,
        why=f"Its attention modules multiply by {m.scale:.6g} (${m.scale_text}$), that is divide by "
        f"{divide:.4f}.",
    )  # fmt: skip
    return Live(
        facts=(
            f"**Why divide?** In layer {layer}, the raw scores Q·K^T have a standard deviation of "
            f"{float(raw.std()):.2f}; after the division, {float(raw.std() * m.scale):.2f}. A dot product of "
            "d numbers grows like √d, and large scores make the softmax pick one key and pass almost no "
            "gradient to the others.",
            f"Measured on this text: the softmax rows have a mean entropy of {entropy(m.scale):.2f} nats "
            f"with the division and {entropy(1.0):.2f} nats without it (lower: peakier).",
            f"**Why quadratic?** Every query meets every key: {grow.lengths[0]} tokens make "
            f"{grow.weights[0]:,} attention weights in this model, {grow.lengths[-1]} tokens "
            f"{grow.weights[-1]:,} ({grow.weights[-1] / grow.weights[0]:.0f}× for "
            f"{grow.lengths[-1] / grow.lengths[0]:.0f}× the tokens).",
        ),
        question=question,
        figures=(
            growth_times(
                {
                    f"softmax(QKᵀ)V, all heads of layer {layer}": (measure.CORE_LENGTHS, core),
                    "one forward pass: inside attention": (grow.lengths, grow.attention),
                    "one forward pass: in all": (grow.lengths, grow.total),
                },
                f"softmax(QKᵀ)V, all heads of layer {layer}",
                "Measured now on this server",
            ),
        ),
        notes=(
            "The step that compares every query with every key grows like n²: twice the text, four times "
            f"the work ({core[-1] / core[-2]:.1f}× measured from {measure.CORE_LENGTHS[-2]} to "
            f"{measure.CORE_LENGTHS[-1]} tokens). In a whole forward pass of a short text the projections "
            "and the feed-forward networks, which grow like n, take most of the time. The weights alone, "
            f"kept as float32 maps, would take {4 * grow.weights[-1] / 2**20:,.0f} MiB at "
            f"{grow.lengths[-1]} tokens.",
        ),
    )
