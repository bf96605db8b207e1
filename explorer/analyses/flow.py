"""Information flow routes (Ferrando & Voita, 2024): which attention edges and feed-forward networks carry
the prediction, from one forward pass, on every architecture `explorer.models.anatomy` describes.

Every residual update is a sum of terms. At sub-layer k of a layer, position t receives

    y_t = x_t + u_t,        u_t = post( sum_{h,s} z[h, t, s] + b_O )

where x_t is the residual stream entering the sub-layer, u_t what the sub-layer adds, and for attention
z[h, t, s] = A[h, t, s] * (v[h, s] @ W_O[h]) is what head h moves from source position s (the attention
weight times the value vector through that head's slice of the output projection). Values are the
anatomy's value projection of the attention's own input (cross-attention: of the encoder's output); rotary
embeddings do not touch them; grouped-query models share a value head among `group` query heads.

Importance (the paper's proximity, from ALTI): a term z_j of the sum y counts by how close it is to y
in L1 distance,

    prox(z_j, y) = max(0, ||y||_1 - ||y - z_j||_1),   importance_j = prox(z_j, y) / sum_i prox(z_i, y),

over the terms of that one sum: the residual x_t and one term per source position s (the sum over heads
of z[h, t, s]) for attention; the residual and the FFN output for the feed-forward sub-layer. Choices:

- The output projection's bias b_O is not a term of its own: it is shared out as b_O * A[h, t, s] / H to
  each (head, source) pair. The attention rows sum to 1, so these shares add up to b_O exactly and each
  source's term is a vector the layer really adds. The value bias is already inside v.
- "The sum" y, by the anatomy's placement of the norms:
  pre (GPT-2, Llama, T5, mBART ...): x + u, the stream entering the sub-layer plus what it adds.
  post (BERT, BART, Marian, DistilBERT, ALBERT, OPT without do_layer_norm_before): the sum that enters the
  LayerNorm after the addition; x is then the sub-layer's own input (the previous LayerNorm's output).
  sandwich (Gemma 3) and post-out (OLMo 2) normalize each sub-layer's output o before adding it:
  u = o * r_t * g with r_t = 1/rms(o_t), one scale per position computed from the whole o_t, and g the
  norm's gain (Gemma stores it as 1 + weight, OLMo 2 as weight: `post_scale` reads it from the norm's own
  forward). That map is linear once r_t is fixed, so every term is multiplied by the same r_t * g and the
  terms still add up to u.
- Parallel blocks (GPT-J, GPT-NeoX with use_parallel_residual, Falcon, Phi): attention and the FFN both
  read the block's input x, and the block outputs y = x + a + f. They are shown as two sub-layers of that
  one sum: 'attention' with the terms x and attention's pieces (their sum x + a), then 'ffn' with the terms
  x + a and f (their sum y, the block's output). The FFN reads x, not x + a: a kept FFN mark leads the
  routes (`trace`) to the block's input.
- Edges are token-level, as in the paper: one term per source position, the sum over heads (as ALTI
  sums its heads). The LLM Transparency Tool's code instead scores each (source, head) piece against y
  and adds the heads' scores up; proximity is not additive, so the two differ somewhat.
- Heads: an edge's importance is split among its heads in proportion to the proximity of each head's
  term to the edge's vector (the sum over heads), the same rule one level down; heads that are all
  "far" (no proximity) split it in proportion to their L1 sizes. Head importances of an edge add up to
  the edge's importance.
- Encoder-decoders: the decoder's routes. Its layers have three sub-layers (self-attention,
  cross-attention, FFN); cross-attention terms come from the encoder's final output at each source
  position. The encoder's own routes are not traced here.
- A sum whose terms are all at L1 distance >= ||y||_1 from it (no proximity anywhere, e.g. y = 0) gives
  all its weight to the residual.
- The model is held to these sums: a block whose output is not its input plus the captured updates, or a
  post-norm that is not a per-position scale, is refused (UnsupportedModel) rather than decomposed wrongly.

Shapes: (layer, tgt, src) per edge, (layer, head, tgt, src) per head, (layer, pos) per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explorer.analyses import ffn
from explorer.analyses.hidden import unembed_top
from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.anatomy import Attention, Proj, UnsupportedModel
from explorer.runs import hooked

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel

MAX_TOKENS = 96  # per sequence; the graph of a longer text is unreadable and its terms grow as pos^2
# float32 elements of (triple, head, d_model) terms computed at a time: small chunks stay in the CPU cache
CHUNK_ELEMENTS = 500_000
ROUNDING = 1e-5  # proximities below this share of ||y||_1 are float32 rounding of the L1 distances
ATTENTION, CROSS, FFN = "attention", "cross", "ffn"
GENERATE_MAX_TOKENS = 24  # encoder-decoders with no target: the greedy output this long at most
# the sums recomputed from the captured parts may differ from the model's by rounding (bf16: ~1e-2 of the
# largest entry); a model that computes something else differs by the size of a whole term
ADDS_UP = 0.02


@dataclass(frozen=True)
class Flow:
    """Importances of every term of every residual update of one stack, for one text."""

    model_name: str
    stack: str  # encoder | decoder: the stack whose routes these are
    causal: bool
    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # the stack's positions (readable)
    sublayers: tuple[str, ...]  # ('attention', 'ffn') or ('attention', 'cross', 'ffn')
    residual: np.ndarray  # (layer, sublayer, pos) importance of the residual term
    edges: dict[str, np.ndarray]  # attention|cross -> (layer, tgt, src) importance of each source
    heads: dict[str, np.ndarray]  # attention|cross -> (layer, head, tgt, src)
    visible: dict[str, np.ndarray]  # attention|cross -> (layer, tgt, src) bool: some head reads src
    weights: dict[str, np.ndarray]  # attention|cross -> (layer, head, tgt, src) the attention weights
    ffn: np.ndarray  # (layer, pos) importance of the FFN output
    residuals: np.ndarray = field(repr=False)  # (layer+1, pos, d_model) the stream between blocks
    ffn_inputs: np.ndarray = field(repr=False)  # (layer, pos, d_model) the FFN input after its norm
    ffn_outputs: np.ndarray = field(repr=False)  # (layer, pos, d_model) the down projection's output
    source_ids: tuple[int, ...] | None = None  # encoder-decoders: the encoder's positions
    source_tokens: tuple[str, ...] | None = None
    target_generated: bool = False  # encoder-decoders: the decoder read the model's own greedy output
    parallel: bool = False  # attention and FFN read the block's input (see the module docstring)

    @property
    def n_layers(self) -> int:
        return self.residual.shape[0]

    @property
    def n_pos(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """What the arrays take (a page keeps one Flow per text)."""
        arrays = [self.residual, self.ffn, self.residuals, self.ffn_inputs, self.ffn_outputs]
        for table in (self.edges, self.heads, self.visible, self.weights):
            arrays += list(table.values())
        return sum(a.nbytes for a in arrays)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (layer, position) with its terms, as the command line prints them."""
        out = []
        for layer in range(self.n_layers):
            for t in range(self.n_pos):
                out.append({"layer": layer, "position": t, "terms": self.terms(layer, t)})
        return out

    def terms(self, layer: int, t: int) -> list[dict[str, Any]]:
        """Every term of position t's updates in `layer`; within a sub-layer the terms without `head`
        have importances that sum to 1."""
        terms: list[dict[str, Any]] = []
        for k, sub in enumerate(self.sublayers):
            terms.append(
                {"sublayer": sub, "kind": "residual", "importance": float(self.residual[layer, k, t])}
            )
            if sub == FFN:
                terms.append({"sublayer": sub, "kind": "ffn", "importance": float(self.ffn[layer, t])})
                continue
            edges, heads, seen = self.edges[sub], self.heads[sub], self.visible[sub]
            for s in np.flatnonzero(seen[layer, t]):
                base = {"sublayer": sub, "kind": "attention", "source": int(s)}
                if sub == CROSS:
                    base["stack"] = "encoder"
                terms.append({**base, "importance": float(edges[layer, t, s])})
                for h in range(heads.shape[1]):
                    terms.append({**base, "head": h, "importance": float(heads[layer, h, t, s])})
        return terms


@dataclass(frozen=True)
class Edge:
    """One kept route segment. Levels: level = layer * n_sublayers + k is the stream entering sub-layer
    k of `layer`; the stream after it is level + 1. Cross edges start at the encoder's output (level -1)."""

    kind: str  # residual | attention | cross | ffn
    layer: int
    sublayer: str
    src: int  # source position (the encoder's for cross; the target itself for residual and ffn)
    tgt: int
    importance: float

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.layer}|{self.sublayer}|{self.src}|{self.tgt}"


@dataclass(frozen=True)
class Routes:
    """The graph kept at a threshold, traced from one position at the top down."""

    position: int
    threshold: float
    edges: tuple[Edge, ...]
    nodes: frozenset[tuple[int, int]]  # (level, pos) reached
    sources: frozenset[int]  # encoder positions reached through cross edges


def proximity(parts: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """max(0, ||whole||_1 - ||whole - part||_1) of each part. parts (..., n, d_model), whole (..., d_model)
    -> (..., n). torch.cdist with p=1 gives the L1 distances without a (..., n, d_model) temporary; its
    float32 rounding (~1e-6 of the size) is not counted as proximity, so a zero term gets exactly 0."""
    size = whole.abs().sum(-1, keepdim=True)
    distance = torch.cdist(whole.unsqueeze(-2).contiguous(), parts.contiguous(), p=1).squeeze(-2)
    return _kept(size - distance, size)


def _kept(prox: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Proximities with float32 rounding (below ROUNDING of the sum's L1 size) and negatives set to 0.
    prox (..., n), size broadcastable to it."""
    return torch.where(prox > ROUNDING * size, prox, torch.zeros_like(prox))


def _normalized(prox: torch.Tensor) -> torch.Tensor:
    """(..., n) proximities with the residual first -> importances summing to 1 (all on the residual when
    every proximity is 0)."""
    total = prox.sum(-1, keepdim=True)
    fallback = torch.zeros_like(prox)
    fallback[..., 0] = 1.0
    return torch.where(total > 0, prox / total.clamp(min=1e-30), fallback)


# --- the stack, its parts and the pieces of an attention output --------------------------------------------


def flow_stack(model: Any) -> str:
    """The stack whose routes the page draws: the decoder when there is one. UnsupportedModel for a model
    the anatomy cannot describe."""
    return anatomy.of(model).output_stack


def sublayer_names(model: Any) -> tuple[str, ...]:
    return (ATTENTION, CROSS, FFN) if CROSS in anatomy.of(model).attention_kinds else (ATTENTION, FFN)


def head_terms(att: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-head, per-source pieces of an attention output. x: the attention's input (src, d_model) (for
    cross-attention, the encoder's output). Returns vo (head, src, d_model) = v[h, s] @ W_O[h] and the output
    bias (d_model,), so that o[t] = sum_{h,s} A[h,t,s] vo[h,s] + b_O."""
    v = att.v(x.float())  # (src, kv_head * d_head), with the value bias
    v = v.view(v.shape[0], att.n_kv_heads, att.d_head).transpose(0, 1)  # (kv_head, src, d_head)
    v = v.repeat_interleave(att.group, dim=0)  # (head, src, d_head): query heads sharing a kv head
    out = Proj(att.o)
    w = out.weight().float().to(v.device)  # (d_model, head * d_head): head h in columns h*d_head ...
    w_o = w.view(w.shape[0], att.n_heads, att.d_head).permute(1, 2, 0)  # (head, d_head, d_model), a view
    bias = out.bias()
    return torch.matmul(v, w_o), None if bias is None else bias.float().to(v.device)


def post_scale(norm: Any, o: torch.Tensor) -> torch.Tensor:
    """An RMSNorm on a sub-layer's output o (..., d_model) as one scale per position: norm(o) = o * scale,
    scale = r * g with r = 1/sqrt(mean(o^2) + eps) from each position's whole o, and g the norm's gain as
    its own forward computes it (`anatomy.norm_of`): Gemma's 1 + weight and OLMo 2's weight alike."""
    found = anatomy.norm_of(norm)
    if found.centred or found.eps is None:
        raise UnsupportedModel(
            f"The norm on a sub-layer's output ({type(norm).__name__}) is not an RMSNorm with a known eps: "
            "it is not a scale per position that these pages can apply to each term."
        )
    r = torch.rsqrt(o.float().pow(2).mean(-1, keepdim=True) + found.eps)  # (..., 1)
    return r * found.gain.to(o.device)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A captured (1, pos, d) tensor, or one flattened to (pos, d) (OPT's FFN), as (pos, d) float32."""
    return t.reshape(-1, t.shape[-1]).float()


def _hooks(a: anatomy.Anatomy, stack: str, subs: tuple[str, ...], seen: dict) -> tuple[list, list[tuple]]:
    """Hooks that keep, per layer i: the block's input ('x', i) and output ('out', i); per sub-layer its own
    input ('in', sub, i: after any norm; for attention, what its values are computed from) and what it adds
    to the residual ('u', sub, i); each attention's output projection ('o', sub, i: before any post-norm)
    and the FFN's down projection ('down', i). Returns the hooks and the keys they fill."""
    st = a.stacks[stack]
    hooks, keys = [], []
    for b in st.blocks:
        call = b.index if st.shared_blocks else None  # ALBERT: one module, called once per layer
        wanted = [
            (("x",), b.module, "pre"), (("out",), b.module, "post"), (("in", FFN), b.ffn.entry, "pre"),
            (("u", FFN), b.ffn_out, "post"), (("down",), b.ffn.down, "post"),
        ]  # fmt: skip
        for sub in subs[:-1]:  # the attentions
            att, update = (b.cross, b.cross_out) if sub == CROSS else (b.attn, b.attn_out)
            wanted += [
                (("in", sub), att.module, "pre"),
                (("o", sub), att.o, "post"),
                (("u", sub), update, "post"),
            ]
        for key, module, when in wanted:
            keys.append(key + (b.index,))
            hooks.append(hooked.keep(seen, key + (b.index,), module, when, call, batch_row=None))
    return hooks, keys


# --- one forward pass -------------------------------------------------------------------------------------


def _inputs(
    loaded: LoadedModel, text: str, target: str | None, limit: int
) -> tuple[dict, list[int], list[int] | None, bool]:
    """Model keyword arguments, the stack's ids, the encoder's ids (encoder-decoders), whether the decoder
    reads the model's own greedy output."""
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = hooked.encode(model, tokenizer, text, limit)
    if len(anatomy.of(model).stacks) == 1:
        if target:
            raise InputError("A target is for encoder-decoders; this model reads one text.")
        return hooked.inputs(model, ids), ids, None, False
    generated = not (target and target.strip())
    if generated:
        tgt = hooked.greedy_decoder_ids(loaded, ids, min(GENERATE_MAX_TOKENS, limit - 1))
    else:
        tgt = hooked.decoder_prefix(model, tokenizer, target)
    if len(tgt) > limit:
        raise InputError(
            f"The target is {len(tgt)} tokens long; this page reads at most {limit}. Shorten it."
        )
    return hooked.inputs(model, ids, tgt), tgt, ids, generated


def compute(loaded: LoadedModel, text: str, target: str | None = None, limit: int = MAX_TOKENS) -> Flow:
    """One forward pass of `text` (for encoder-decoders: the source, with `target` the decoder's prefix,
    or the model's greedy output when there is none) and the importance of every term of every residual
    update of the stack `flow_stack(model)`. Raises InputError (empty, too long) or UnsupportedModel (a
    model the anatomy cannot describe, or whose blocks are not the sums decomposed here)."""
    model = loaded.model
    a = anatomy.of(model)
    stack = flow_stack(model)
    subs = sublayer_names(model)
    kwargs, ids, source_ids, generated = _inputs(loaded, text, target, limit)
    seen: dict[tuple, torch.Tensor] = {}
    hooks, keys = _hooks(a, stack, subs, seen)
    # no logits are read here (Gemma's full (pos, vocab) is large)
    out = hooked.run(
        loaded, kwargs, hooks, output_attentions=True, **hooked.options(model, last_logits_only=True)
    )
    lost = [key for key in keys if key not in seen]
    if lost:
        raise UnsupportedModel(
            f"{type(model).__name__}'s forward pass did not run a part that the anatomy names ({lost[0]}): "
            "it computes this layer another way, which these pages do not decompose."
        )
    if CROSS in subs:
        maps = {ATTENTION: out.decoder_attentions, CROSS: out.cross_attentions}
    else:
        maps = {ATTENTION: out.attentions}
    if not maps[ATTENTION]:
        raise InputError("The model returned no attention weights: it needs eager attention.")
    encoder_out = out.encoder_last_hidden_state[0] if CROSS in subs else None  # (src, d_model)
    with torch.no_grad():
        return _decompose(loaded, a, stack, subs, seen, maps, encoder_out, ids, source_ids, generated)


def _held_to(model: Any, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """UnsupportedModel when `got` (recomputed from the captured parts) is not `want` (the model's own)."""
    off = float((got - want).abs().max())
    if off > ADDS_UP * max(float(want.abs().max()), 1e-6):
        raise UnsupportedModel(
            f"In {type(model).__name__}, {what} differs from what the model computed (by up to {off:.3g}): "
            "its residual updates are not the sums that these pages decompose."
        )


def _decompose(loaded, a, stack, subs, seen, maps, encoder_out, ids, source_ids, generated) -> Flow:
    """Every layer at once per sub-layer: a few batched tensor operations instead of dozens per layer."""
    model = loaded.model
    blocks = a.stacks[stack].blocks
    n = len(blocks)

    def per_layer(*key) -> torch.Tensor:  # (layer, pos, d_model)
        return torch.stack([_rows(seen[key + (i,)]) for i in range(n)])

    residual = np.zeros((n, len(subs), len(ids)), np.float32)
    edges, heads, visible, weights = {}, {}, {}, {}
    xs = per_layer("x")  # (layer, pos, d_model) entering each block
    out = per_layer("out")
    if a.placement != "post":  # post-norm: the block's output is the last LayerNorm's, not a sum
        _held_to(
            model, xs + sum(per_layer("u", sub) for sub in subs), out, "each block's input plus its updates"
        )
    stream = xs  # the stream entering the current sub-layer (post-norm: its own input instead)
    for k, sub in enumerate(subs):
        x = per_layer("in", sub) if a.placement == "post" else stream
        u = per_layer("u", sub)  # what the sub-layer adds
        if sub == FFN:
            imp = _normalized(proximity(torch.stack([x, u], 2), x + u))  # (layer, pos, 2)
            residual[:, k], ffn_imp = imp[..., 0].cpu().numpy(), imp[..., 1].cpu().numpy()
        else:
            w = torch.stack([maps[sub][i][0] for i in range(n)]).float()  # (layer, head, tgt, src)
            vos = []
            norms = [b.attn_post_norm if sub == ATTENTION else None for b in blocks]
            for i, b in enumerate(blocks):
                att = b.cross if sub == CROSS else b.attn
                vo, bias = head_terms(att, encoder_out if sub == CROSS else _rows(seen[("in", sub, i)]))
                # b_O shared by the heads; times A[h,t,s]: by the sources
                vos.append(vo if bias is None else vo + bias / att.n_heads)
            scale = None  # (layer, tgt, d_model): the post-norm as a scale of every term
            if norms[0] is not None:
                o = per_layer("o", sub)
                scale = torch.stack([post_scale(norm, o[i]) for i, norm in enumerate(norms)])
                _held_to(model, o * scale, u, f"the norm on {sub}'s output taken as a scale per position")
            imps = _attention_sublayer(w, torch.stack(vos), scale, x, u)
            residual[:, k], edges[sub], heads[sub] = imps
            visible[sub] = (w > 0).any(1).cpu().numpy()
            weights[sub] = w.cpu().numpy()
        stream = x + u
    tok = loaded.tokenizer
    return Flow(
        model_name=loaded.card.name,
        stack=stack,
        causal=a.stacks[stack].causal,
        ids=tuple(int(t) for t in ids),
        tokens=tuple(display_tokens(tok, list(ids))),
        sublayers=subs,
        residual=residual,
        edges=edges,
        heads=heads,
        visible=visible,
        weights=weights,
        ffn=ffn_imp,
        residuals=torch.cat([xs, out[-1:]]).cpu().numpy(),
        ffn_inputs=per_layer("in", FFN).cpu().numpy(),
        ffn_outputs=per_layer("down").cpu().numpy(),
        source_ids=tuple(source_ids) if source_ids is not None else None,
        source_tokens=tuple(display_tokens(tok, list(source_ids))) if source_ids is not None else None,
        target_generated=generated,
        parallel=a.parallel,
    )


def _attention_sublayer(a, vo, scale, x, u):
    """Importances of the residual (layer, tgt), each source (layer, tgt, src) and each head
    (layer, head, tgt, src), every layer at once. a (layer, head, tgt, src); vo (layer, head, src, d_model)
    with the bias shares; scale (layer, tgt, d_model) or None; x, u (layer, tgt, d_model). Only the
    (layer, tgt, src) triples that some head reads are computed (a causal model's triangle)."""
    n_layers, n_heads, n_tgt, n_src = a.shape
    y = x + u  # (layer, tgt, d_model): the sums that the terms make up
    ls, ts, ss = torch.nonzero((a > 0).any(1), as_tuple=True)  # (triple,) each
    res_prox = proximity(x.unsqueeze(2), y).squeeze(2)  # (layer, tgt)
    edge_prox = torch.zeros(n_layers, n_tgt, n_src, device=y.device)
    head_share = torch.zeros(n_layers, n_heads, n_tgt, n_src, device=y.device)
    step = max(1, CHUNK_ELEMENTS // max(1, n_heads * vo.shape[-1]))
    for lo in range(0, len(ts), step):
        li, t, s = ls[lo : lo + step], ts[lo : lo + step], ss[lo : lo + step]
        z = vo[li, :, s]  # (triple, head, d_model): a gathered copy, scaled in place
        z.mul_(a[li, :, t, s].unsqueeze(-1))
        if scale is not None:
            z.mul_(scale[li, t].unsqueeze(1))
        per_src = z.sum(1)  # (triple, d_model): what source s moves into target t
        whole = y[li, t]
        size = whole.abs().sum(-1)
        edge_prox[li, t, s] = _kept(size - (whole - per_src).abs().sum(-1), size)
        # heads within each edge: proximity of each head's piece to the edge's vector
        hp = proximity(z, per_src)  # (triple, head)
        far = hp.sum(-1) == 0  # no head near the edge's vector: split by the heads' L1 sizes instead
        share = hp
        if far.any():
            share = hp.clone()
            share[far] = z[far].abs().sum(-1)
        head_share[li, :, t, s] = share / share.sum(-1, keepdim=True).clamp(min=1e-30)
    imp = _normalized(torch.cat([res_prox.unsqueeze(-1), edge_prox], -1))  # (layer, tgt, 1 + src)
    edge = imp[..., 1:]
    return imp[..., 0].cpu().numpy(), edge.cpu().numpy(), (head_share * edge.unsqueeze(1)).cpu().numpy()


# --- routes -----------------------------------------------------------------------------------------------


def level_of(flow: Flow, layer: int, k: int) -> int:
    """The level of the stream entering sub-layer k of `layer`."""
    return layer * len(flow.sublayers) + k


def trace(flow: Flow, position: int, threshold: float) -> Routes:
    """The edges with importance >= threshold (and > 0) that reach `position` at the top, found from the
    top down: a node is kept when a kept edge leaves it. Residual, attention and cross edges, and FFN
    marks (an FFN reads the stream at its own position, so a kept FFN keeps the node it reads: the stream
    entering it, or in a parallel block the block's input)."""
    if not 0 <= position < flow.n_pos:
        raise InputError(
            f"Position {position} is out of range: this text has positions 0 to {flow.n_pos - 1}."
        )
    subs = flow.sublayers
    top = flow.n_layers * len(subs)
    reached = {(top, position)}
    kept: list[Edge] = []
    sources: set[int] = set()
    for layer in reversed(range(flow.n_layers)):
        for k in reversed(range(len(subs))):
            sub, lvl = subs[k], level_of(flow, layer, k)
            for t in sorted(p for (lv, p) in reached if lv == lvl + 1):
                w = float(flow.residual[layer, k, t])
                if w > 0 and w >= threshold:
                    kept.append(Edge("residual", layer, sub, t, t, w))
                    reached.add((lvl, t))
                if sub == FFN:
                    w = float(flow.ffn[layer, t])
                    if w > 0 and w >= threshold:
                        kept.append(Edge("ffn", layer, sub, t, t, w))
                        # the FFN reads the stream entering it; in a parallel block, the block's input
                        reached.add((level_of(flow, layer, 0) if flow.parallel else lvl, t))
                    continue
                row = flow.edges[sub][layer, t]
                for s in np.flatnonzero((row >= threshold) & (row > 0)):
                    kept.append(
                        Edge("cross" if sub == CROSS else "attention", layer, sub, int(s), t, float(row[s]))
                    )
                    if sub == CROSS:
                        sources.add(int(s))
                    else:
                        reached.add((lvl, int(s)))
    return Routes(position, threshold, tuple(kept), frozenset(reached), frozenset(sources))


# --- what a node or an FFN mark holds --------------------------------------------------------------------


def has_lens(model: Any) -> bool:
    """Decoder-only models whose LM head reads the residual stream (through the stack's final norm where
    there is one): their nodes can be read through the logit lens."""
    a = anatomy.of(model)
    if a.stack_names != ("decoder",) or a.unembed is None:
        return False
    d_model = Proj(a.blocks("decoder")[0].attn.o).weight().shape[0]
    return (
        Proj(a.unembed).weight().shape[1] == d_model
    )  # not so where the stream is projected first (OPT-350m)


def lens_tops(
    loaded: LoadedModel, flow: Flow, nodes: list[tuple[int, int]], top: int = 3
) -> dict[tuple[int, int], list]:
    """Decoders with an LM head (`has_lens`): for residual nodes (boundary, pos) (boundary b is the stream
    entering layer b, b = n_layers its output), the `top` tokens the model's final norm and unembedding
    read from it, as [(token, prob)]. Other models: {}."""
    model = loaded.model
    if not nodes or not has_lens(model):
        return {}
    a = anatomy.of(model)
    head, norm = a.unembed, a.stacks["decoder"].final_norm
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    with loaded.lock, torch.no_grad():
        h = torch.from_numpy(np.stack([flow.residuals[b, p] for b, p in nodes]))
        h = h.to(head.weight.device, head.weight.dtype)
        probs, ids = unembed_top(head, norm(h) if norm is not None else h, top, softcap)
    return {
        node: list(zip(display_tokens(loaded.tokenizer, idx), vals))
        for node, vals, idx in zip(nodes, probs.tolist(), ids.tolist())
    }


@dataclass(frozen=True)
class Neuron:
    index: int
    activation: float
    share: float  # a_n (w_n . f) / |f|^2: its part of the FFN output along that output's own direction
    promotes: tuple[str, ...]  # decoders with an LM head: the tokens its output vector raises most


def top_neurons(loaded: LoadedModel, flow: Flow, layer: int, pos: int, k: int = 8) -> list[Neuron]:
    """The neurons that write most of the FFN output at (layer, pos): ranked by their share of it, the
    projection of a_n w_n on f = sum_n a_n w_n (+ bias), divided by |f|^2 (shares of all neurons and the
    bias add up to 1)."""
    model = loaded.model
    net = anatomy.of(model).blocks(flow.stack)[layer].ffn
    net.dense()  # a mixture of experts has no one set of neurons
    device = Proj(net.down).weight().device
    x = torch.from_numpy(flow.ffn_inputs[layer, pos : pos + 1]).to(device)  # (1, d_model)
    with loaded.lock:
        acts = net.activations(x)[0].cpu()  # (d_ff,)
        w = net.out_vectors(list(range(acts.shape[0])))  # (d_ff, d_model)
    f = torch.from_numpy(flow.ffn_outputs[layer, pos]).float()
    shares = acts * (w @ f) / f.pow(2).sum().clamp(min=1e-30)
    order = shares.argsort(descending=True)[:k].tolist()
    promotes: list[tuple[str, ...]] = [() for _ in order]
    if ffn.can_unembed(model, flow.stack):
        with loaded.lock:
            _, ids, _, _ = ffn.promoted(model, w[order] * acts[order].sign().unsqueeze(-1), k=4)
        promotes = [tuple(display_tokens(loaded.tokenizer, row.tolist())) for row in ids]
    return [Neuron(int(n), float(acts[n]), float(shares[n]), p) for n, p in zip(order, promotes)]
