"""The lessons on how a transformer reads a text: tokens and embeddings, one head by hand, many heads,
positions, masks and cross-attention. Each builder takes the loaded model, the workspace's text and its
capture, and returns what the lesson shows (explorer.lessons.live.Live)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.analyses import positions, scratch
from explorer.figures.learn import heatmap, lines
from explorer.figures.lessons import family_masks
from explorer.lessons.live import Live, causal_set, label, reading_set, source_tokens
from explorer.lessons.questions import CHOICE, NUMBER, Question
from explorer.models import anatomy
from explorer.models.anatomy import input_device
from explorer.runs.capture import Capture
from explorer.web.display import md

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

EMBED_DIMS = 64  # dimensions of each embedding drawn
HAND_QUERY = 3  # the query of the by-hand exercise: the fourth token (few keys to sum over in a decoder)


def tokens(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    seq = source_tokens(cap)
    n = len(seq.ids)
    special = [t for t, s in zip(seq.tokens, seq.special) if s]
    emb = loaded.model.get_input_embeddings()
    with torch.no_grad():
        ids = torch.tensor([list(seq.ids)], device=input_device(loaded.model))
        vectors = emb(ids)[0].float().cpu().numpy()  # (pos, d_model), as the embedding module returns it
    d_model, vocab = vectors.shape[1], loaded.card.vocab_size
    shown = min(EMBED_DIMS, d_model)
    added = (
        f"{len(special)} special token(s): {', '.join(md(t) for t in special)}"
        if special
        else "no special token"
    )
    question = Question(
        "How many tokens does the model read for this text, special tokens included? Count the chips.",
        NUMBER, n, unit="tokens",
        why=f"The tokenizer cut the text into {n - len(special)} pieces and added {added}.",
    )  # fmt: skip
    return Live(
        facts=(
            f"The vocabulary has **{vocab:,}** entries; each token id picks one row of the embedding table, "
            f"a vector of **d_model = {d_model}** numbers.",
            f"The table alone holds {vocab:,} × {d_model} = **{vocab * d_model:,}** numbers.",
        ),
        question=question,
        tokens=seq,
        figures=(
            heatmap(
                vectors[:, :shown],
                f"The first {shown} of the {d_model} numbers of each token's embedding",
                rows=list(seq.tokens),
                row_title="token",
                col_title="dimension",
            ),
        ),  # fmt: skip
    )


def middle_layer_math(loaded: LoadedModel, text: str) -> tuple[int, scratch.StackCapture, scratch.HeadsMath]:
    """The middle layer of the self-attention a lesson reads (an encoder-decoder's encoder), recomputed
    from scratch on `text`: (layer, the capture of that layer, every intermediate of its heads)."""
    a = anatomy.of(loaded.model)
    kind = "encoder" if "encoder" in a.attention_kinds else a.attention_kinds[0]
    layer = a.n_layers(kind) // 2
    found = scratch.capture(loaded, text, limit=512, layer=layer)[kind]
    return layer, found, scratch.heads_from_scratch(loaded.model, kind, layer, found.inputs[layer])


def one_head(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    layer, found, m = middle_layer_math(loaded, text)
    head = 0
    n = len(found.tokens)
    q = min(HAND_QUERY, n - 1)
    allowed = m.allowed[q].cpu().numpy()  # (k,) where this query may look
    z = m.logits[head, q].cpu().numpy().astype(np.float64)  # scaled scores (+ bias), before the mask
    model_row = found.attentions[layer][head, q].float().cpu().numpy()
    keys = [j for j in range(n) if allowed[j]]
    j = max(keys, key=lambda k: model_row[k])
    shown = np.round(z[keys], 6)  # the numbers the student computes with
    e = np.exp(shown - shown.max())
    by_hand = float(e[keys.index(j)] / e.sum())
    tol = max(1e-5, scratch.tolerance(found.dtype))
    answer = float(model_row[j])
    names = [label(k, found.tokens[k]) for k in keys]
    scores = m.scores[head, q].cpu().numpy()
    table = {
        "key": names,
        "q·k": [f"{scores[k]:.6f}" for k in keys],
        "z = scaled score": [f"{s:.6f}" for s in shown],
    }
    if m.bias is not None:
        table["of which position bias"] = [f"{float(m.bias[head, q, k]):.6f}" for k in keys]
    grid = m.logits[head].cpu().numpy().copy()
    grid[~m.allowed.cpu().numpy()] = np.nan
    tok = md(found.tokens[q])
    question = Question(
        f"Layer {layer}, head {head}, query {q} (**{tok}**): after the softmax, what weight does this query "
        f"give the key **{md(names[keys.index(j)])}**? Compute it from the scores z in the table "
        f"(to {tol:g}).",
        NUMBER, answer, tolerance=tol,
        why=f"softmax(z) over the {len(keys)} keys this query may see gives {by_hand:.6f} from the rounded "
        f"scores; the model's own attention map says {answer:.6f}.",
    )  # fmt: skip
    scale = m.scale_text
    return Live(
        facts=(
            f"The layer's input X is {n} tokens × {m.x.shape[1]} numbers. Head {head} projects it with its "
            f"own W_Q, W_K, W_V of {m.w_shape[0]} × {m.w_shape[1]} into queries, keys and values of "
            f"d_head = {m.q.shape[-1]}.",
            f"This model multiplies Q·K^T by ${scale}$"
            + (", adds a position bias" if m.bias is not None else "")
            + (", and masks later keys (causal)" if m.causal else "")
            + ".",
        ),
        question=question,
        latex=r"z_j = \frac{q \cdot k_j}{\sqrt{d_{head}}}, \qquad w_j = \frac{e^{z_j}}{\sum_i e^{z_i}}",
        table=table,
        figures=(
            heatmap(
                grid,
                f"Layer {layer}, head {head}: scaled scores z (blank: masked)",
                rows=list(found.tokens),
                cols=list(found.tokens),
                row_title="query",
                col_title="key",
            ),
        ),  # fmt: skip
    )


def _focus(tokens: tuple[str, ...]) -> int:
    """The position of the word 'it' when the text has one (the classic question), else the last."""
    for i, t in enumerate(tokens):
        if t.replace("␣", " ").strip().lower() == "it":
            return i
    return len(tokens) - 1


def heads(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    s = reading_set(cap)
    layer = s.maps.shape[0] // 2
    q = _focus(s.queries.tokens)
    rows = s.maps[layer, :, q, :]  # (head, k)
    allowed = [k for k in range(rows.shape[1]) if not (s.causal and k > q)]
    tops = [int(np.argmax(r[allowed])) for r in rows]
    head = next((h for h, t in enumerate(tops) if allowed[t] != 0), 0)  # not the first token, when one is
    keys = [label(k, s.keys.tokens[k]) for k in allowed]
    tok = md(s.queries.tokens[q])
    question = Question(
        f"In layer {layer}, head {head}, which token does **{tok}** (position {q}) attend to most?",
        CHOICE, keys[tops[head]], options=tuple(keys),
        why=f"Its largest weight in the model's map is {rows[head, allowed[tops[head]]]:.3f}.",
    )  # fmt: skip
    different = len({allowed[t] for t in tops})
    return Live(
        facts=(
            f"This layer has **{rows.shape[0]} heads**, each with its own map. For this query they pick "
            f"{different} different tokens as their favourite.",
            "Each head's output is its weighted sum of values; the layer concatenates the heads' outputs "
            "and projects them back to d_model with W_O.",
        ),
        question=question,
        figures=(
            heatmap(
                rows[:, allowed],
                f"Layer {layer}: what {s.queries.tokens[q]!r} (position {q}) reads, one row per head",
                rows=[f"head {h}" for h in range(rows.shape[0])],
                cols=[s.keys.tokens[k] for k in allowed],
                row_title="head",
                col_title="key",
                colorscale="Blues",
                symmetric=False,
            ),
        ),  # fmt: skip
    )


PLACES = {
    "learned": "A learned vector per position, added to the token's embedding",
    "sinusoidal": "Fixed sine and cosine waves per position, added to the embedding",
    "rope": "Queries and keys turned by an angle that grows with the position (RoPE)",
    "relative": "A learned bias on each attention score, by the query-key distance (relative buckets)",
    "alibi": "A fixed penalty on each attention score, growing with the distance (ALiBi)",
    "none": "No position information at all",
}


def _position_figure(model, scheme: str):
    if scheme == "rope":
        sets = positions.rotary_sets(model)
        waves = {s.name: positions.wavelengths(s.inv_freq) for s in sets}
        fig = lines(np.arange(len(sets[0].inv_freq)), waves, "How many positions each rotated pair takes for "
                    "one turn", "pair i", "tokens per turn")  # fmt: skip
        fig.update_yaxes(type="log")
        return fig
    if scheme == "learned":
        table, _ = positions.learned_table(model)
        n = min(64, len(table))
        return heatmap(positions.cosine_similarity(table[:n]), f"Cosine similarity of the first {n} position "
                       "vectors", row_title="position", col_title="position")  # fmt: skip
    if scheme == "relative":
        stack = anatomy.of(model).stack_names[0]
        rb = positions.t5_relative(model, stack, reach=32)
        return heatmap(rb.bias, f"{stack}: the learned bias each head adds, by key − query distance",
                       row_title="head", col_title="key − query", x_values=rb.distances.tolist())  # fmt: skip
    if scheme == "sinusoidal":
        d = getattr(model.config, "d_model", None) or getattr(model.config, "hidden_size", 64)
        return heatmap(positions.sinusoidal(64, int(d)), "Sinusoidal encoding of the first 64 positions",
                       row_title="position", col_title="dimension")  # fmt: skip
    return None


def order(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    scheme = anatomy.of(loaded.model).position
    answer = PLACES.get(scheme, PLACES["none"])
    fig = _position_figure(loaded.model, scheme)
    question = Question(
        "How does this model tell its attention where each token is?",
        CHOICE, answer, options=tuple(PLACES.values()),
        why=f"The model's modules say: {scheme} ({md(loaded.card.position_encoding)}).",
    )  # fmt: skip
    return Live(
        facts=(f"{md(loaded.card.name)}: position information is **{md(loaded.card.position_encoding)}**.",),
        question=question,
        figures=(fig,) if fig is not None else (),
    )


def masks(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    s = causal_set(cap)
    grid = s.maps[0, 0]  # (q, k) layer 0, head 0
    zeros = int((grid == 0).sum())
    n_q, n_k = grid.shape
    src = source_tokens(cap)
    what = (
        "causal: each token sees itself and the tokens before it"
        if s.causal
        else ("bidirectional: every token sees every token")
    )
    question = Question(
        f"In this map ({s.title.lower()}, layer 0, head 0, {n_q} × {n_k}), how many weights are exactly 0?",
        NUMBER, zeros, unit="weights",
        why=(f"A causal mask forbids the {n_q * (n_q - 1) // 2:,} cells above the diagonal of {n_q} × {n_q}; "
             if s.causal else "Nothing is masked in a bidirectional map; ")
        + f"the model's map has {zeros:,} zeros.",
    )  # fmt: skip
    labels_q, labels_k = list(s.queries.tokens), list(s.keys.tokens)
    return Live(
        facts=(
            f"{md(loaded.card.name)} is {'a' if loaded.card.family == 'decoder' else 'an'} "
            f"**{loaded.card.family}**; this map is {what}.",
            "The three families differ in where a query may look: the blue cells below, drawn for "
            f"{len(src.ids)} source and {n_q} target tokens.",
        ),
        question=question,
        figures=(
            heatmap(grid, f"{s.title}, layer 0, head 0", labels_q, labels_k, "query", "key", "Blues", False),
            family_masks(len(src.ids), n_q),
        ),
    )


def cross(loaded: LoadedModel, text: str, cap: Capture) -> Live:
    s = cap.attention_set("cross")
    layer = s.maps.shape[0] - 1
    peaks = s.maps[layer].max(axis=-1)  # (head, tgt)
    head, row = (int(v) for v in np.unravel_index(np.argmax(peaks), peaks.shape))
    keys = [label(k, t) for k, t in enumerate(s.keys.tokens)]
    top = int(np.argmax(s.maps[layer, head, row]))
    writes = md(s.queries.tokens[row])
    question = Question(
        f"Layer {layer}, head {head}: which source token does the decoder read most in the row **{writes}**?",
        CHOICE, keys[top], options=tuple(keys),
        why=f"Its weight in the model's cross-attention map is {s.maps[layer, head, row, top]:.3f}.",
    )  # fmt: skip
    return Live(
        facts=(
            f"The decoder wrote {len(s.queries.ids)} tokens; every decoder layer's cross-attention reads the "
            f"encoder's output for the {len(s.keys.ids)} source tokens.",
            "Rows are named by what they write: the row of `<pad> → 2` is read while writing 2.",
        ),
        question=question,
        figures=(
            heatmap(
                s.maps[layer, head],
                f"Cross-attention, layer {layer}, head {head}",
                list(s.queries.tokens),
                list(s.keys.tokens),
                "decoder (writes)",
                "source",
                "Blues",
                False,
            ),
        ),  # fmt: skip
    )


FAMILIES = ("all-minilm-l6-v2", "smollm2-135m-instruct", "date-normalizer")  # one embedded model per family


def family_maps(cap: Capture, name: str) -> tuple:
    """Layer 0, head 0 of each kind of attention `cap` holds (an encoder-decoder: its encoder, decoder and
    cross-attention), titled with the model's `name`, for the three families side by side."""
    return tuple(
        heatmap(s.maps[0, 0], f"{name}: {s.title.lower()}", list(s.queries.tokens), list(s.keys.tokens),
                "query", "key", "Blues", False, height=360)
        for s in cap.attention_sets()
    )  # fmt: skip
