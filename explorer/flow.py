"""Information flow routes (Ferrando & Voita, 2024): which attention edges and feed-forward networks carry
the prediction, from one forward pass.

Every residual update is a sum of terms. At sub-layer k of a layer, position t receives

    y_t = x_t + u_t,        u_t = post( sum_{h,s} z[h, t, s] + b_O )

where x_t is the residual stream entering the sub-layer, u_t what the sub-layer adds, and for attention
z[h, t, s] = A[h, t, s] * (v[h, s] @ W_O[h]) is what head h moves from source position s (the attention
weight times the value vector through that head's slice of the output projection). Rotary embeddings do
not touch values; grouped-query models share a value head among `n_rep` query heads.

Importance (the paper's proximity, from ALTI): a term z_j of the sum y counts by how close it is to y
in L1 distance,

    prox(z_j, y) = max(0, ||y||_1 - ||y - z_j||_1),   importance_j = prox(z_j, y) / sum_i prox(z_i, y),

over the terms of that one sum: the residual x_t and one term per source position s (the sum over heads
of z[h, t, s]) for attention; the residual and the FFN output for the feed-forward sub-layer. Choices:

- The output projection's bias b_O is not a term of its own: it is shared out as b_O * A[h, t, s] / H to
  each (head, source) pair. The attention rows sum to 1, so these shares add up to b_O exactly and each
  source's term is a vector the layer really adds. The value bias is already inside v.
- "The sum" y is what is added before any normalization: x + u for pre-norm models (GPT-2, Llama, Gemma,
  T5), and for post-norm models (BERT, BART) the sum that enters the LayerNorm after the addition.
- Gemma 3 normalizes each sub-layer's output before adding it (post_attention_layernorm,
  post_feedforward_layernorm): u = o * r_t * (1 + w) with r_t = 1/rms(o_t), one scale per position
  computed from the whole output o_t. That map is linear once r_t is fixed, so every term is multiplied
  by the same r_t * (1 + w) and the terms still add up to u.
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

Shapes: (layer, tgt, src) per edge, (layer, head, tgt, src) per head, (layer, pos) per node.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explorer import blocks, ffn
from explorer.errors import InputError
from explorer.hidden import final_norm
from explorer.tokens import display_tokens

MAX_TOKENS = 96  # per sequence; the graph of a longer text is unreadable and its terms grow as pos^2
# float32 elements of (triple, head, d_model) terms computed at a time: small chunks stay in the CPU cache
CHUNK_ELEMENTS = 500_000
ROUNDING = 1e-5  # proximities below this share of ||y||_1 are float32 rounding of the L1 distances
ATTENTION, CROSS, FFN = "attention", "cross", "ffn"
GENERATE_MAX_TOKENS = 24  # encoder-decoders with no target: the greedy output this long at most


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


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


# --- where the attention pieces are, per family ---------------------------------------------------------


def _value_and_out(kind: str, attn: Any) -> tuple[Any, Any]:
    """The modules whose outputs are V and the attention output (before any post-norm)."""
    if kind == "gpt2":
        return attn.c_attn, attn.c_proj
    if kind == "bert":
        raise AssertionError("BERT's output projection sits outside its self-attention module")
    if kind == "t5":
        return attn.v, attn.o
    if kind == "bart":
        return attn.v_proj, attn.out_proj
    return attn.v_proj, attn.o_proj  # llama, gemma3


def _attention_modules(model: Any, layer: int, which: str) -> tuple[Any, Any]:
    """(value module, output projection) of the self ('attention') or 'cross' attention of a layer."""
    kind = blocks.style(model)
    stack = flow_stack(model)
    if kind == "bert":
        block = blocks.layers(model, stack)[layer]
        return block.attention.self.value, block.attention.output.dense
    module = blocks.attention_module(model, stack if which == ATTENTION else "cross", layer)
    return _value_and_out(kind, module)


def _out_heads(kind: str, out: Any, n_heads: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output projection as (head, d_head, d_model) and its bias (d_model,): views of the model's
    own weight, not copies."""
    w = out.weight.detach().float()
    if kind == "gpt2":  # Conv1D: weight (in, out), y = x W + b
        per = w.view(n_heads, -1, w.shape[1])
    else:  # nn.Linear: weight (out, in), y = x W^T + b
        per = w.view(w.shape[0], n_heads, -1).permute(1, 2, 0)
    bias = out.bias.detach().float() if getattr(out, "bias", None) is not None else None
    return per, bias


def _post_norm(kind: str, model: Any, layer: int, which: str) -> Any:
    """Gemma's norm between a sub-layer's output and the residual addition; None elsewhere."""
    if kind != "gemma3":
        return None
    block = blocks.layers(model, flow_stack(model))[layer]
    return block.post_attention_layernorm if which == ATTENTION else block.post_feedforward_layernorm


def _post_scale(norm: Any, o: torch.Tensor) -> torch.Tensor:
    """(pos, d_model): Gemma's RMSNorm as a per-position linear map, r_t * (1 + w), from the whole o."""
    r = torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + norm.eps)
    return r * (1.0 + norm.weight.detach().float())


def flow_stack(model: Any) -> str:
    """The stack whose routes the page draws: the decoder when there is one."""
    return blocks.stacks(model)[-1]


def sublayer_names(model: Any) -> tuple[str, ...]:
    return (ATTENTION, CROSS, FFN) if len(blocks.stacks(model)) == 2 else (ATTENTION, FFN)


# --- one forward pass -------------------------------------------------------------------------------------


def _inputs(
    loaded: Any, text: str, target: str | None, limit: int
) -> tuple[dict, list[int], list[int] | None, bool]:
    """Model keyword arguments, the stack's ids, the encoder's ids (encoder-decoders), whether the decoder
    reads the model's own greedy output."""
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = blocks.encode(model, tokenizer, text, limit)
    device = blocks.input_device(model)
    if len(blocks.stacks(model)) == 1:
        if target:
            raise InputError("A target is for encoder-decoders; this model reads one text.")
        x = torch.tensor([ids], device=device)
        return {"input_ids": x, "attention_mask": torch.ones_like(x)}, ids, None, False
    start = model.config.decoder_start_token_id
    if start is None:
        raise InputError("This encoder-decoder's config has no decoder_start_token_id: no decoder input.")
    src = torch.tensor([ids], device=device)
    generated = not (target and target.strip())
    if generated:
        with loaded.lock, torch.no_grad():
            config = model.config
            cache_ok = getattr(config, "num_decoder_layers", None) in (
                None,
                getattr(config, "num_layers", None),
            )
            tgt = model.generate(
                input_ids=src, max_new_tokens=min(GENERATE_MAX_TOKENS, limit - 1), do_sample=False,
                num_beams=1, use_cache=cache_ok,
            )[0].tolist()  # fmt: skip
    else:
        labels = tokenizer(text_target=target)["input_ids"]
        if labels and labels[-1] == tokenizer.eos_token_id:
            labels = labels[:-1]  # a prefix to continue, not a finished output
        tgt = [int(start), *labels]
    if len(tgt) > limit:
        raise InputError(
            f"The target is {len(tgt)} tokens long; this page reads at most {limit}. Shorten it."
        )
    kwargs = {
        "input_ids": src,
        "attention_mask": torch.ones_like(src),
        "decoder_input_ids": torch.tensor([tgt], device=device),
    }
    return kwargs, tgt, ids, generated


def compute(loaded: Any, text: str, target: str | None = None, limit: int = MAX_TOKENS) -> Flow:
    """One forward pass of `text` (for encoder-decoders: the source, with `target` the decoder's prefix,
    or the model's greedy output when there is none) and the importance of every term of every residual
    update of the stack `flow_stack(model)`. Raises InputError (empty, too long) or
    blocks.UnsupportedModel (a family not decomposed here)."""
    model = loaded.model
    kind = blocks.style(model)
    stack = flow_stack(model)
    subs = sublayer_names(model)
    attn_subs = [s for s in subs if s != FFN]
    kwargs, ids, source_ids, generated = _inputs(loaded, text, target, limit)
    n = len(blocks.layers(model, stack))
    seen: dict[tuple, torch.Tensor] = {}
    handles = []

    def keep(name: tuple, pre: bool = False):
        if pre:

            def hook(module, args, kw):
                seen[name] = (args[0] if args else kw["hidden_states"]).detach()[0].float()

            return hook

        def post(module, args, output):
            seen[name] = _first(output).detach()[0].float()

        return post

    def add(module, name, pre=False):
        if pre:
            handles.append(module.register_forward_pre_hook(keep(name, True), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(keep(name)))

    with loaded.lock:
        try:
            for i in range(n):
                block = blocks.layers(model, stack)[i]
                p = blocks.parts(model, stack, i)
                add(block, ("x", i), pre=True)
                add(block, ("out", i))
                add(p.ffn_in, ("ffn_in", i), pre=True)
                add(p.ffn_down, ("down", i))
                add(p.ffn_update, ("ffn", i))
                for sub in attn_subs:
                    value, out = _attention_modules(model, i, sub)
                    add(value, ("v", sub, i))
                    add(out, ("o", sub, i))
                add(p.attn_update, ("u", ATTENTION, i))
                if CROSS in subs:
                    cross = blocks.attention_module(model, CROSS, i)
                    add(cross, ("u", CROSS, i))
                    # the stream entering cross-attention: BART's (post-norm) is the module's input; T5
                    # normalizes inside its cross layer, whose input is the stream
                    add(cross if kind == "bart" else block.layer[1], ("x", CROSS, i), pre=True)
            extra = {}
            params = inspect.signature(model.forward).parameters
            if "use_cache" in params:
                extra["use_cache"] = False
            if "logits_to_keep" in params:
                extra["logits_to_keep"] = 1  # no logits are read here; Gemma's full [pos, vocab] is large
            with torch.no_grad():
                out = model(**kwargs, output_attentions=True, **extra)
        finally:
            for handle in handles:
                handle.remove()
    if CROSS in subs:
        maps = {ATTENTION: out.decoder_attentions, CROSS: out.cross_attentions}
    else:
        maps = {ATTENTION: out.attentions}
    if not maps[ATTENTION]:
        raise InputError("The model returned no attention weights: it needs eager attention.")
    with torch.no_grad():
        return _decompose(loaded, kind, stack, subs, seen, maps, n, ids, source_ids, generated)


def _decompose(loaded, kind, stack, subs, seen, maps, n, ids, source_ids, generated) -> Flow:
    """Every layer at once per sub-layer: a few batched tensor operations instead of dozens per layer."""
    model = loaded.model
    post_norm = kind in ("bert", "bart")
    residual = np.zeros((n, len(subs), len(ids)), np.float32)
    edges, heads, visible, weights = {}, {}, {}, {}
    xs = torch.stack([seen[("x", i)] for i in range(n)])  # (layer, pos, d_model) entering each block
    stream = xs  # pre-norm: the stream entering the current sub-layer
    for k, sub in enumerate(subs):
        if sub == FFN:
            r = torch.stack([seen[("ffn_in", i)] for i in range(n)]) if post_norm else stream
            f = torch.stack([seen[("ffn", i)] for i in range(n)])
            imp = _normalized(proximity(torch.stack([r, f], 2), r + f))  # (layer, pos, 2)
            residual[:, k], ffn_imp = imp[..., 0].cpu().numpy(), imp[..., 1].cpu().numpy()
            continue
        x = torch.stack([seen[("x", CROSS, i)] for i in range(n)]) if sub == CROSS else stream
        if post_norm and sub == ATTENTION:
            x = xs
        a = torch.stack([maps[sub][i][0] for i in range(n)]).float()  # (layer, head, tgt, src)
        u = torch.stack([seen[("u", sub, i)] for i in range(n)])  # (layer, tgt, d_model) what it adds
        res_imp, edge_imp, head_imp = _attention_sublayer(model, kind, sub, seen, a, x, u)
        residual[:, k], edges[sub], heads[sub] = res_imp, edge_imp, head_imp
        visible[sub] = (a > 0).any(1).cpu().numpy()
        weights[sub] = a.cpu().numpy()
        stream = x + u
    residuals = torch.cat([xs, seen[("out", n - 1)].unsqueeze(0)])
    tok = loaded.tokenizer
    return Flow(
        model_name=loaded.card.name,
        stack=stack,
        causal=blocks.causal(model, stack),
        ids=tuple(int(t) for t in ids),
        tokens=tuple(display_tokens(tok, list(ids))),
        sublayers=subs,
        residual=residual,
        edges=edges,
        heads=heads,
        visible=visible,
        weights=weights,
        ffn=ffn_imp,
        residuals=residuals.cpu().numpy(),
        ffn_inputs=torch.stack([seen[("ffn_in", i)] for i in range(n)]).cpu().numpy(),
        ffn_outputs=torch.stack([seen[("down", i)] for i in range(n)]).cpu().numpy(),
        source_ids=tuple(source_ids) if source_ids is not None else None,
        source_tokens=tuple(display_tokens(tok, list(source_ids))) if source_ids is not None else None,
        target_generated=generated,
    )


def head_terms(
    model: Any, kind: str, layer: int, sub: str, v: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-head, per-source pieces of an attention output. v: the value module's output (src, d_v) (GPT-2:
    the fused QKV output), a: (head, tgt, src). Returns vo (head, src, d_model) = v[h, s] @ W_O[h] and the
    output bias, so that o[t] = sum_{h,s} a[h,t,s] vo[h,s] + b_O."""
    _, out = _attention_modules(model, layer, sub)
    n_heads = a.shape[0]
    w_o, bias = _out_heads(kind, out, n_heads)  # (head, d_head, d_model)
    d_head = w_o.shape[1]
    if kind == "gpt2":
        v = v[:, -n_heads * d_head :]
    n_kv = v.shape[-1] // d_head
    v = v.view(v.shape[0], n_kv, d_head).transpose(0, 1)  # (kv_head, src, d_head)
    v = v.repeat_interleave(n_heads // n_kv, dim=0)  # (head, src, d_head): query heads sharing a kv head
    return torch.matmul(v, w_o.to(v.device)), bias  # (head, src, d_model); w_o is a strided view


def _attention_sublayer(model, kind, sub, seen, a, x, u):
    """Importances of the residual (layer, tgt), each source (layer, tgt, src) and each head
    (layer, head, tgt, src), every layer at once. a (layer, head, tgt, src); x, u (layer, tgt, d_model).
    Only the (layer, tgt, src) triples that some head reads are computed (a causal model's triangle)."""
    n_layers, n_heads, n_tgt, n_src = a.shape
    vos, scales = [], []
    for i in range(n_layers):
        vo, bias = head_terms(model, kind, i, sub, seen[("v", sub, i)], a[i])
        if bias is not None:
            vo = vo + bias.to(vo.device) / n_heads  # b_O shared by the heads; times A[h,t,s]: by sources
        vos.append(vo)
        norm = _post_norm(kind, model, i, sub)
        if norm is not None:
            scales.append(_post_scale(norm, seen[("o", sub, i)]))
    vo = torch.stack(vos)  # (layer, head, src, d_model)
    scale = torch.stack(scales) if scales else None  # (layer, tgt, d_model)
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
    marks (an FFN reads the stream at its own position, so a kept FFN keeps that node too)."""
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
                        reached.add((lvl, t))
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


def lens_tops(
    loaded: Any, flow: Flow, nodes: list[tuple[int, int]], top: int = 3
) -> dict[tuple[int, int], list]:
    """Decoders with an LM head: for residual nodes (boundary, pos) (boundary b is the stream entering layer
    b, b = n_layers its output), the `top` tokens the model's final norm and unembedding read from it, as
    [(token, prob)]. Other models: {}."""
    model = loaded.model
    head = model.get_output_embeddings()
    if blocks.style(model) not in ("gpt2", "llama", "gemma3") or head is None or not nodes:
        return {}
    norm = final_norm(model)
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    found: dict[tuple[int, int], list] = {}
    with loaded.lock, torch.no_grad():
        for lo in range(0, len(nodes), 64):
            part = nodes[lo : lo + 64]
            h = torch.from_numpy(np.stack([flow.residuals[b, p] for b, p in part]))
            h = h.to(head.weight.device, head.weight.dtype)
            if norm is not None:
                h = norm(h)
            logits = head(h).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            values, index = torch.softmax(logits, -1).topk(top, -1)
            for node, vals, idx in zip(part, values.cpu().tolist(), index.cpu().tolist()):
                found[node] = list(zip(display_tokens(loaded.tokenizer, idx), vals))
    return found


@dataclass(frozen=True)
class Neuron:
    index: int
    activation: float
    share: float  # a_n (w_n . f) / |f|^2: its part of the FFN output along that output's own direction
    promotes: tuple[str, ...]  # decoders with an LM head: the tokens its output vector raises most


def top_neurons(loaded: Any, flow: Flow, layer: int, pos: int, k: int = 8) -> list[Neuron]:
    """The neurons that write most of the FFN output at (layer, pos): ranked by their share of it, the
    projection of a_n w_n on f = sum_n a_n w_n (+ bias), divided by |f|^2 (shares of all neurons and the
    bias add up to 1)."""
    model = loaded.model
    x = torch.from_numpy(flow.ffn_inputs[layer])
    with loaded.lock:
        acts = ffn.activations(model, flow.stack, layer, x)[pos]  # (d_ff,)
        w = ffn.out_vectors(model, flow.stack, layer, list(range(acts.shape[0])))  # (d_ff, d_model)
    f = torch.from_numpy(flow.ffn_outputs[layer, pos]).float()
    shares = acts * (w @ f) / f.pow(2).sum().clamp(min=1e-30)
    order = shares.argsort(descending=True)[:k].tolist()
    promotes: list[tuple[str, ...]] = [() for _ in order]
    if ffn.can_unembed(model):
        with loaded.lock:
            _, ids, _, _ = ffn.promoted(model, w[order] * acts[order].sign().unsqueeze(-1), k=4)
        promotes = [tuple(display_tokens(loaded.tokenizer, row.tolist())) for row in ids]
    return [Neuron(int(n), float(acts[n]), float(shares[n]), p) for n, p in zip(order, promotes)]
