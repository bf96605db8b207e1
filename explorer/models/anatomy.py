"""The anatomy of a loaded model: for each stack and layer, where its parts are and how they connect.

Every page that computes from the weights (from-scratch attention, FFN memory, flow, ablation,
patching) reads the model through one `Anatomy`, computed once per model object (`of(model)`) and kept
beside it. The knowledge is data, in `explorer.models.styles`: `STYLES` maps a model type to the names
its modeling code in transformers uses (paths relative to one block), and models that follow the common
naming are found by `discover`. Numbers come from what transformers itself says: the config, and the
attention module's own `scaling`, head counts and head size.

Conventions for every `Proj`: y = x W^T + b with W (out, in), whatever the module stores (GPT-2's
Conv1D keeps (in, out)); a fused projection (q, k and v in one matrix) is described by the rows of its
output that one of q, k, v takes, so that consumers never see the fusion.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer.errors import InputError, UnsupportedModel
from explorer.models.styles import (
    INTERLEAVED_ROTARY,
    STYLES,
    Style,
    adjust,
    at_path,
    discover,
    text_config,
)

# -- the values -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proj:
    """A linear map as y = x W^T + b, W (out, in); `rows` picks output features of a fused projection."""

    module: Any
    rows: torch.Tensor | None = None  # (out,) indices into the module's output features

    def weight(self) -> torch.Tensor:
        w = self.module.weight.detach()
        if type(self.module).__name__ == "Conv1D":  # GPT-2 stores (in, out)
            w = w.T
        return w if self.rows is None else w[self.rows.to(w.device)]

    def bias(self) -> torch.Tensor | None:
        b = getattr(self.module, "bias", None)
        if b is None:
            return None
        b = b.detach()
        return b if self.rows is None else b[self.rows.to(b.device)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) float32 -> (..., out) float32, from the weights."""
        y = x @ self.weight().float().T.to(x.device)
        b = self.bias()
        return y if b is None else y + b.float().to(x.device)


@dataclass(frozen=True)
class Attention:
    """One attention sub-layer. `module`'s forward input is the sub-layer input after its norm (its
    `hidden_states`); `o`'s forward input is the heads' outputs side by side (pos, head * d_head), head h
    in columns h*d_head:(h+1)*d_head."""

    module: Any
    q: Proj
    k: Proj
    v: Proj
    o: Any
    n_heads: int
    n_kv_heads: int
    d_head: int
    scale: float  # what Q K^T is multiplied by
    q_norm: Any = None  # a norm of each query (Qwen3, Gemma 3: per head; OLMo 2: the whole projection)
    k_norm: Any = None
    qk_norm_per_head: bool = True
    cross: bool = False  # keys and values from the encoder's output

    @property
    def group(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class Ffn:
    """One feed-forward sub-layer: a = act(x W_up) [* (x W_gate) gated], out = a W_down^T. `entry`'s forward
    input is the sub-layer input after its norm; `down`'s forward input is the neuron activations."""

    entry: Any
    up: Proj | None
    down: Any  # for a mixture of experts: the whole mixture (its output is what the sub-layer adds)
    act: Any  # a callable on tensors
    gate: Proj | None = None  # gated (SwiGLU, GeGLU): act(x W_gate) * (x W_up)
    experts: bool = False  # a mixture of experts: no one set of neurons

    @property
    def gated(self) -> bool:
        return self.gate is not None

    def dense(self) -> None:
        """UnsupportedModel for a mixture of experts, where there is no one FFN's neurons to read."""
        if self.experts:
            raise UnsupportedModel(
                f"This model's feed-forward layers are a mixture of experts ({type(self.entry).__name__}): "
                "each token goes through a few experts chosen by a router, so there is no one set of neurons "
                "to read here. Its attention, routing and residual stream can be examined on the other pages."
            )

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """(pos, d_ff) neuron activations from the FFN input x (pos, d_model), from the weights."""
        self.dense()
        x = x.detach().float()
        with torch.no_grad():
            if self.gate is not None:
                return self.act(self.gate(x)) * self.up(x)
            return self.act(self.up(x))

    def out_vectors(self, neurons: list[int]) -> torch.Tensor:
        """(len(neurons), d_model): what each neuron writes per unit of activation."""
        self.dense()
        return Proj(self.down).weight().float()[:, neurons].T.cpu()


@dataclass(frozen=True)
class Block:
    """One layer of a stack. The residual updates are the outputs of `attn_out` and `ffn_out` (the output
    projection or, where the model normalizes a sub-layer's output before adding it, that norm)."""

    module: Any
    index: int
    attn: Attention
    ffn: Ffn
    attn_norm: Any  # before attention (None: post-norm or none)
    ffn_norm: Any
    attn_out: Any  # output = what attention adds to the residual (post-norm: before the norm)
    ffn_out: Any
    attn_post_norm: Any = None  # Gemma's sandwich and OLMo 2: a norm on the sub-layer's output
    ffn_post_norm: Any = None
    cross: Attention | None = None
    cross_norm: Any = None
    cross_out: Any = None
    cross_entry: Any = None  # forward input = the stream entering cross-attention (before its norm)
    # post-norm: the norms of stream + sub-layer output (their output is the stream the next part reads)
    attn_add_norm: Any = None
    cross_add_norm: Any = None
    ffn_add_norm: Any = None


@dataclass(frozen=True)
class Stack:
    name: str  # encoder | decoder
    blocks: tuple[Block, ...]
    causal: bool
    final_norm: Any  # None: no norm after the last block (post-norm models)
    shared_blocks: bool = False  # one module reused by every layer (ALBERT)


@dataclass(frozen=True)
class Anatomy:
    """Where everything is (see the module docstring)."""

    model_type: str
    style: str  # the STYLES key followed, or "discovered"
    stacks: dict[str, Stack]
    placement: str  # pre | post | sandwich | post-out (OLMo 2: norms on sub-layer outputs only)
    parallel: bool  # attention and FFN read the same input and both add to it (GPT-J, NeoX, Falcon, Phi)
    position: str  # learned | sinusoidal | rope | alibi | relative | none
    rotary_dim: int | None  # rope: dimensions rotated per head (partial rotary: fewer than d_head)
    rotary_interleaved: bool  # GPT-J: pairs (0,1), (2,3) ...; else halves (i, i + d/2)
    unembed: Any  # the LM head, or None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def stack_names(self) -> tuple[str, ...]:
        return tuple(self.stacks)

    @property
    def output_stack(self) -> str:
        """The stack whose output the model's head reads: the decoder when there is one."""
        return self.stack_names[-1]

    def blocks(self, stack: str) -> tuple[Block, ...]:
        if stack not in self.stacks:
            raise InputError(f"This model has no {stack} stack (it has: {', '.join(self.stacks)}).")
        return self.stacks[stack].blocks

    def n_layers(self, stack: str) -> int:
        return len(self.blocks(stack))

    def attention(self, kind: str, layer: int) -> Attention:
        """The self-attention of stack `kind`, or 'cross' (the decoder's cross-attention)."""
        if kind == "cross":
            found = self.blocks("decoder")[layer].cross
            if found is None:
                raise InputError("This model has no cross-attention.")
            return found
        return self.blocks(kind)[layer].attn

    @property
    def attention_kinds(self) -> tuple[str, ...]:
        """The stacks' self-attentions, and 'cross' for encoder-decoders."""
        names = tuple(self.stacks)
        return names + ("cross",) if len(names) == 2 else names


# -- finding the parts ------------------------------------------------------------------------------------


def _need(root: Any, path: str, what: str, where: str) -> Any:
    found = at_path(root, path)
    if found is None:
        raise UnsupportedModel(f"Could not find the {what} ({path!r}) in {where}.")
    return found


def _first_int(module: Any, config: Any, names: tuple[str, ...]) -> int | None:
    for holder in (module, config):
        for name in names:
            value = getattr(holder, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _fused_rows(layout: str, n_heads: int, n_kv: int, d_head: int) -> tuple[torch.Tensor, ...]:
    """The output features that q, k and v take in a fused projection."""
    j = torch.arange(d_head)
    if layout == "concat":  # [q (heads) | k (kv heads) | v (kv heads)]
        q = torch.arange(n_heads * d_head)
        k = n_heads * d_head + torch.arange(n_kv * d_head)
        return q, k, k + n_kv * d_head
    if layout == "per-head":  # (head, 3, d_head)
        h = torch.arange(n_heads)[:, None] * 3 * d_head
        return ((h + j).flatten(), (h + d_head + j).flatten(), (h + 2 * d_head + j).flatten())
    if layout == "grouped":  # (kv head, group + 2, d_head): the group's queries, then its key and value
        group = n_heads // n_kv
        width = (group + 2) * d_head
        g = torch.arange(n_kv)[:, None, None] * width
        q = (g + torch.arange(group)[None, :, None] * d_head + j).flatten()
        k = (torch.arange(n_kv)[:, None] * width + group * d_head + j).flatten()
        return q, k, k + d_head
    if layout == "multi-query":  # (head + 2, d_head): every query, one key, one value
        return torch.arange(n_heads * d_head), n_heads * d_head + j, (n_heads + 1) * d_head + j
    raise ValueError(f"unknown fused layout {layout!r}")


def _attention(model: Any, style: Style, block: Any, where: str, cross: bool = False) -> Attention:
    config = text_config(model)
    path = style.cross if cross else style.attn
    module = _need(block, path, "cross-attention" if cross else "attention module", where)
    n_heads = _first_int(
        module, config, ("num_heads", "num_attention_heads", "n_heads", "n_head", "n_heads_")
    )
    if cross or style.cross is not None:  # encoder-decoders keep per-stack head counts in the config
        n_heads = _first_int(module, config, ("num_heads", "n_heads")) or n_heads
    d_head = _first_int(
        module, config, ("head_dim", "head_size", "attention_head_size", "key_value_proj_dim", "head_dim_")
    )
    o_path = (
        (style.cross + ".out_proj" if style.o.endswith("out_proj") else style.cross + ".o")
        if cross
        else style.o
    )
    o = _need(block, o_path, "attention output projection", where)
    width = Proj(o).weight().shape[1]  # the heads side by side
    if n_heads is None and d_head is not None:
        n_heads = width // d_head
    if n_heads is None:
        raise UnsupportedModel(f"Could not find the number of attention heads of {where}.")
    d_head = d_head or width // n_heads
    n_kv = _first_int(module, None, ("num_key_value_heads", "num_kv_heads", "n_kv_heads"))
    if n_kv is None:
        groups = getattr(module, "num_key_value_groups", None)
        n_kv = n_heads // groups if isinstance(groups, int) and groups > 0 else None
    if n_kv is None:
        n_kv = (
            _first_int(None, config, ("num_key_value_heads", "num_kv_heads")) if style.cross is None else None
        )
    n_kv = n_kv or n_heads
    if style.qkv is not None and not cross:
        fused = _need(block, style.qkv, "fused q/k/v projection", where)
        layout = style.layout
        if layout == "falcon":
            layout = "grouped" if config.new_decoder_architecture else (
                "multi-query" if config.multi_query else "per-head")  # fmt: skip
            n_kv = n_kv if layout == "grouped" else (1 if layout == "multi-query" else n_heads)
        rows = _fused_rows(layout, n_heads, n_kv, d_head)
        q, k, v = (Proj(fused, r) for r in rows)
    else:
        q, k, v = (
            Proj(_need(module, name, f"{name} projection", where)) for name in (style.q, style.k, style.v)
        )
    if Proj(o).weight().shape[1] != n_heads * d_head:
        raise UnsupportedModel(
            f"The attention output projection of {where} reads {width} features, not {n_heads} heads x "
            f"{d_head}: its heads are not side by side."
        )
    scale = getattr(module, style.scale or "scaling", None)
    if not isinstance(scale, (int, float)):
        scale = d_head**-0.5
    q_norm = None if cross else at_path(block, style.q_norm)
    k_norm = None if cross else at_path(block, style.k_norm)
    per_head = style.qk_norm_per_head
    weight = getattr(q_norm, "weight", None)
    if isinstance(weight, torch.Tensor):  # its size says: one head's d_head (Qwen3) or every head's (OLMo 2)
        per_head = weight.numel() == d_head
    return Attention(module, q, k, v, o, n_heads, n_kv, d_head, float(scale), q_norm, k_norm, per_head, cross)


def _ffn(style: Style, block: Any, where: str) -> Ffn:
    entry = _need(block, style.ffn, "feed-forward network", where)
    if at_path(block, style.down or None) is None and at_path(entry, "experts") is not None:  # Mixtral, OLMoE
        return Ffn(entry, None, entry, None, experts=True)
    if not style.down:
        raise UnsupportedModel(f"Could not find the feed-forward down projection in {where}.")
    down = _need(block, style.down, "feed-forward down projection", where)
    act = _need(block, style.act, "feed-forward activation", where)
    if style.gate_up is not None:  # [gate | up] in one matrix
        fused = _need(block, style.gate_up, "fused gate/up projection", where)
        d_ff = Proj(fused).weight().shape[0] // 2
        return Ffn(
            entry, Proj(fused, torch.arange(d_ff, 2 * d_ff)), down, act, Proj(fused, torch.arange(d_ff))
        )
    t5_gated = at_path(block, style.up + "_0") is not None  # T5 v1.1's gated-gelu: wi_0 (gate), wi_1 (up)
    if t5_gated:
        return Ffn(
            entry, Proj(at_path(block, style.up + "_1")), down, act, Proj(at_path(block, style.up + "_0"))
        )
    up = Proj(_need(block, style.up, "feed-forward up projection", where))
    gate = at_path(block, style.gate)
    return Ffn(entry, up, down, act, Proj(gate) if gate is not None else None)


def _position(style: Style, model_type: str, config: Any, attn: Attention) -> tuple[str, int | None, bool]:
    """(scheme, rotary dimensions per head, interleaved) from the style and what the config says."""
    if style.position != "rope":
        return style.position, None, False
    d = attn.d_head
    if model_type in INTERLEAVED_ROTARY:
        return "rope", int(getattr(config, "rotary_dim", None) or d), True
    factor = getattr(config, "partial_rotary_factor", None)
    if factor is None:
        factor = getattr(config, "rotary_pct", None)
    if factor is None:
        params = getattr(config, "rope_parameters", None) or {}
        factor = params.get("partial_rotary_factor", 1.0) if isinstance(params, dict) else 1.0
    return "rope", int(d * float(factor)), False


def build(model: Any) -> Anatomy:
    """The anatomy of `model` (see the module docstring); UnsupportedModel naming a part not found."""
    config = text_config(model)
    model_type = getattr(config, "model_type", "?")
    base = getattr(model, "base_model", model)
    if model_type == "deberta" or model_type == "deberta-v2":
        raise UnsupportedModel(
            "DeBERTa's disentangled attention adds content-to-position and position-to-content scores "
            "computed from relative position embeddings: its heads are not softmax(QK^T) of one projection, "
            "so these pages do not decompose it."
        )
    style = STYLES.get(model_type)
    name = model_type if style is not None else "discovered"
    if style is None:
        style = discover(model)
    style = adjust(model_type, style, config)
    stacks: dict[str, Stack] = {}
    for stack, path in style.layers.items():
        layers = _need(base, path, f"{stack} blocks", type(model).__name__)
        shared = False
        if model_type == "albert":  # one block (per group) reused by every layer
            groups = list(layers)
            per = config.num_hidden_layers // config.num_hidden_groups
            layers = [groups[i // per].albert_layers[0] for i in range(config.num_hidden_layers)]
            shared = True
        found = []
        for i, block in enumerate(layers):
            where = f"{stack} layer {i} ({type(block).__name__})"
            is_dec = stack == "decoder" and style.cross is not None
            cross = _attention(model, style, block, where, cross=True) if is_dec else None
            attn = _attention(model, style, block, where)
            ffn = _ffn(style, block, where)
            attn_post = at_path(block, style.attn_post_norm)
            ffn_post = at_path(block, style.ffn_post_norm)
            found.append(
                Block(
                    module=block,
                    index=i,
                    attn=attn,
                    ffn=ffn,
                    attn_norm=at_path(block, style.attn_norm),
                    ffn_norm=at_path(block, style.ffn_norm),
                    attn_out=attn_post if attn_post is not None else attn.o,
                    ffn_out=ffn_post if ffn_post is not None else ffn.down,
                    attn_post_norm=attn_post,
                    ffn_post_norm=ffn_post,
                    cross=cross,
                    cross_norm=at_path(block, style.cross_norm) if cross else None,
                    cross_out=cross.o if cross else None,
                    cross_entry=at_path(block, style.cross_entry) if cross else None,
                    attn_add_norm=at_path(block, style.attn_add_norm),
                    cross_add_norm=at_path(block, style.cross_add_norm) if cross else None,
                    ffn_add_norm=at_path(block, style.ffn_add_norm),
                )
            )
        causal = stack == "decoder" and not getattr(config, "use_bidirectional_attention", False)
        final = at_path(base, style.final_norm.get(stack))
        stacks[stack] = Stack(stack, tuple(found), causal, final, shared)
    if not stacks or not any(s.blocks for s in stacks.values()):
        raise UnsupportedModel(f"{type(model).__name__} has no transformer blocks that could be found.")
    first = next(iter(stacks.values())).blocks[0].attn
    position, rotary_dim, interleaved = _position(style, model_type, config, first)
    get_head = getattr(model, "get_output_embeddings", None)
    return Anatomy(
        model_type=model_type,
        style=name,
        stacks=stacks,
        placement=style.placement,
        parallel=style.parallel,
        position=position,
        rotary_dim=rotary_dim,
        rotary_interleaved=interleaved,
        unembed=get_head() if get_head is not None else None,
    )


@dataclass(frozen=True)
class Norm:
    """What a norm module computes, y = gain * normalize(x) (+ bias), read from its own forward (`norm_of`),
    so that no page guesses it from a class name: normalize takes out the mean and divides by the standard
    deviation (LayerNorm, `centred`) or divides by the root mean square (RMSNorm); `gain` is its weight, or
    1 + weight where the model stores gamma - 1 (Gemma)."""

    module: Any
    centred: bool
    one_plus: bool
    gain: torch.Tensor  # (d,) float32
    bias: torch.Tensor | None  # (d,) float32
    eps: float | None  # None: the module keeps none under a known name

    @property
    def kind(self) -> str:
        """layer | rms | rms1p (an RMSNorm whose weight stores gamma - 1)."""
        return "layer" if self.centred else ("rms1p" if self.one_plus else "rms")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The norm over the last dimension of x, from the weights, in float32."""
        eps = 1e-6 if self.eps is None else self.eps
        gain = self.gain.to(x.device)
        if self.centred:
            bias = None if self.bias is None else self.bias.to(x.device)
            return torch.nn.functional.layer_norm(x, x.shape[-1:], gain, bias, eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gain


def norm_of(module: Any) -> Norm:
    """What `module` computes (see Norm), from its forward on three probes: with x of mean 0 and RMS 1,
    LayerNorm and RMSNorm both return gain * x (+ bias), so the outputs on s x and -s x differ by
    2 gain x; the weight is matched to the gain or to 1 + gain; a shift of the input changes nothing for
    LayerNorm only. UnsupportedModel for a norm that is neither."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedModel(f"The norm {type(module).__name__} has no scale weight to read.")
    w = weight.detach().float().cpu()  # (d,)
    x = torch.ones_like(w)
    x[1::2] = -1
    x = x - x.mean()
    x = x / x.pow(2).mean().sqrt()  # mean 0, RMS 1, no zero entry
    s = 8.0  # large enough that the norm's epsilon is negligible
    probe = torch.stack([s * x, -s * x, s * x + s]).to(weight.device, weight.dtype)
    with torch.no_grad():
        y = module.forward(probe).float().cpu()  # forward, not __call__: no one's hooks see the probe
    gain = (y[0] - y[1]) / (2 * x)
    eps = next((float(getattr(module, n)) for n in ("eps", "variance_epsilon") if hasattr(module, n)), None)
    bias = getattr(module, "bias", None)
    bias = bias.detach().float().cpu() if isinstance(bias, torch.Tensor) else None
    # the two readings differ by exactly 1 in every element: take the closer one on average (a large weight,
    # as in Gemma's norms, puts a bound on the largest error above 1), then check that it fits
    off = {one_plus: float((gain - (w + one_plus)).abs().mean()) for one_plus in (False, True)}
    one_plus = off[True] < off[False]
    found = w + 1.0 if one_plus else w
    if (gain - found).abs().max() <= 1e-2 * (1.0 + found.abs().max()) and off[one_plus] < 0.25:
        centred = bool((y[2] - y[0]).abs().max() <= 1e-3 * (1.0 + y[0].abs().max()))
        return Norm(module, centred, one_plus, found, bias, eps)
    raise UnsupportedModel(
        f"The norm {type(module).__name__} does not compute weight * normalize(x) or (1 + weight) * "
        "normalize(x): these pages do not apply it."
    )


_KEPT: "weakref.WeakKeyDictionary[Any, Anatomy]" = weakref.WeakKeyDictionary()


def of(model: Any) -> Anatomy:
    """The anatomy of `model`, built on first use and kept beside the model object (not on it: a shared
    model carries no per-analysis attributes)."""
    found = _KEPT.get(model)
    if found is None:
        found = _KEPT[model] = build(model)
    return found


def input_device(model: Any) -> torch.device:
    """Where the model's input ids go: its input embedding's device."""
    return model.get_input_embeddings().weight.device
