"""Direct logit attribution: how much each head, each feed-forward block, the embeddings and the biases write
directly toward logit(target) - logit(foil) at one position.

In a model whose blocks only add to the residual stream (pre-norm, sandwich and parallel blocks), the
stream entering the final norm is a sum of what every part wrote (OLMo 2 normalizes each sub-layer's output
only, which keeps the sum):

    x = embeddings + Σ_layers ( Σ_heads o_h + b_O  [+ cross-attention alike]  + ffn )

where o_h is head h's output through its slice of W_O (times the per-position scale of a norm on the
sub-layer's output, Gemma 3's sandwich: the scale of the whole output, so the heads still add up). The final
norm is linear once its scale is fixed; as is usual the scale is taken from this run: for RMSNorm
N(c) = γ ⊙ c / rms(x), for LayerNorm N(c) = γ ⊙ (c - mean(c)) / σ(x), and its bias β is a part of its own.
Each part's value is (W_U[target] - W_U[foil]) · N(part) times the model's logit scale (T5, Cohere, Granite);
the parts sum to the model's own logit difference.

Post-norm models (BERT, BART, Marian, OPT-350m) normalize the stream after every sub-layer: x' =
LN(x + update). With every norm's scale taken from this run each LN is affine, so what a part wrote reaches
the end through every later norm of the residual path (N applied to it, its β a part of its own), and the
parts still sum exactly. A masked-LM head transforms the final stream before unembedding it (dense,
activation, LayerNorm: BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT); its dense layer is linear (its bias a
part), its norm is fixed as the others, and its activation is taken as this run's gain per dimension,
act(z) / z, as the norms' scales are. These are direct effects with every scale and that gain frozen: a
part's effect through later attention or feed-forward layers is not in its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from explorer.analyses import experiments, ffn
from explorer.analyses.flow import post_scale
from explorer.models import anatomy
from explorer.models.anatomy import Proj, UnsupportedModel
from explorer.models.styles import LM_HEAD_TRANSFORMS, at_path
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

SUM_TOLERANCE = 1e-3  # relative: the parts must rebuild the stream entering the final norm


def _logit_scale(model) -> float:
    """What the model multiplies its logits by: T5's d_model^-0.5 on the decoder's output, Cohere's
    logit_scale, Granite's 1 / logits_scaling."""
    scale = ffn._logit_scale(model) * float(getattr(model, "logit_scale", 1.0) or 1.0)
    return scale / float(getattr(model.config, "logits_scaling", 1.0) or 1.0)


@dataclass(frozen=True)
class Part:
    name: str  # embeddings | head | attention bias | cross head | cross bias | ffn | final norm bias | ...
    layer: int | None
    head: int | None
    value: float


@dataclass(frozen=True)
class Attribution:
    tokens: tuple[str, ...]  # what the read stack read
    position: int
    target: experiments.Target
    foil: experiments.Target | None
    parts: tuple[Part, ...]
    logit_diff: float  # computed by the model itself
    route: str = "the final norm (its scale from this run) and the unembedding"  # what a part goes through

    @property
    def total(self) -> float:
        return float(sum(p.value for p in self.parts))

    def heads(self, name: str = "head") -> torch.Tensor:
        """[layer, head] values of the parts called `name`."""
        found = [p for p in self.parts if p.name == name]
        n_layers = max(p.layer for p in found) + 1
        n_heads = max(p.head for p in found) + 1
        grid = torch.zeros(n_layers, n_heads)
        for p in found:
            grid[p.layer, p.head] = p.value
        return grid

    def to_dict(self) -> dict:
        parts = [{"name": p.name, "layer": p.layer, "head": p.head, "value": p.value} for p in self.parts]
        return {"total": self.total, "parts": parts, "logit_diff": self.logit_diff}


def _check(model) -> anatomy.Anatomy:
    a = anatomy.of(model)
    stack = a.stacks[a.output_stack]
    if a.unembed is None:
        raise UnsupportedModel("Direct logit attribution needs a language-model head.")
    if a.placement != "post" and stack.final_norm is None:
        raise UnsupportedModel("Direct logit attribution needs a final norm after the last block.")
    unknown = [b for b in stack.blocks if b.attn_add_norm is None or b.ffn_add_norm is None]
    unknown += [b for b in stack.blocks if b.cross is not None and b.cross_add_norm is None]
    if a.placement == "post" and unknown:
        raise UnsupportedModel(
            "This post-norm model's norms after each sub-layer are not known here, so what each part wrote "
            "cannot be followed through them."
        )
    if not stack.causal and a.model_type not in LM_HEAD_TRANSFORMS:
        raise UnsupportedModel(
            f"This masked-LM head ({type(a.unembed).__name__} of a {a.model_type} model) transforms the "
            "stream in a way not described here before its unembedding: not attributed."
        )
    if getattr(model.config, "final_logit_softcapping", None):
        raise UnsupportedModel("The model soft-caps its logits, which is not a sum of parts.")
    return a


class _Parts:
    """The parts' vectors at the read position, as rows of one matrix in the coordinates of the stream
    they have reached; every map the stream goes through applies to every row."""

    def __init__(self, d: int, device) -> None:
        self.meta: list[tuple[str, int | None, int | None]] = []
        self.rows = torch.zeros(0, d, device=device)

    def add(self, name: str, layer: int | None, head: int | None, v: torch.Tensor) -> None:
        self.meta.append((name, layer, head))
        self.rows = torch.cat([self.rows, v.reshape(1, -1).to(self.rows.device)])

    def through_norm(self, module, y: torch.Tensor, name: str, layer: int | None) -> None:
        """The norm `module` with its scale from its input y at this position: linear on every row, its
        bias a part of its own."""
        norm = anatomy.norm_of(module)
        eps = 1e-6 if norm.eps is None else norm.eps
        gain = norm.gain.to(self.rows.device)
        y = y.to(self.rows.device)
        if norm.centred:
            rows = self.rows - self.rows.mean(-1, keepdim=True)
            self.rows = gain * rows * torch.rsqrt(y.var(unbiased=False) + eps)
        else:
            self.rows = gain * self.rows * torch.rsqrt(y.pow(2).mean() + eps)
        if norm.bias is not None:
            self.add(name, layer, None, norm.bias)

    def through_linear(self, module, name: str) -> None:
        """A linear layer: its weight on every row, its bias a part of its own."""
        proj = Proj(module)
        self.rows = self.rows @ proj.weight().float().to(self.rows.device).T
        if proj.bias() is not None:
            self.add(name, None, None, proj.bias().float())

    def check(self, x: torch.Tensor, where: str) -> None:
        """UnsupportedModel unless the rows rebuild x, the stream the model itself computed here."""
        gap = float((self.rows.sum(0) - x.to(self.rows.device)).norm())
        if gap > SUM_TOLERANCE * max(float(x.norm()), 1.0):
            raise UnsupportedModel(
                f"The parts found do not add up to the stream {where} (difference {gap:.3g}): this model "
                "writes to it in a way not attributed here."
            )


def attribute(
    loaded: LoadedModel, text: str, target: str, foil: str | None = None, prefix: str = ""
) -> Attribution:
    """The parts' direct effects on logit(target) - logit(foil) (or logit(target)) at the read position:
    the one that predicts the next token after `text` (encoder-decoders: after the decoder's `prefix`;
    masked LMs: the mask)."""
    model = loaded.model
    a = _check(model)
    probe = experiments.prepare(loaded, text, prefix, stack=a.output_stack)
    want = experiments.target_token(loaded, probe, target)
    other = experiments.target_token(loaded, probe, foil, "foil") if foil else None
    stack = a.stacks[a.output_stack]
    post = a.placement == "post"
    head = None
    if not stack.causal:
        head = tuple(at_path(model, p) for p in LM_HEAD_TRANSFORMS[a.model_type])
        if None in head:
            raise UnsupportedModel("The masked-LM head's dense layer and norm were not found.")
    seen: dict = {}

    def keep(key, module, when: str, call: int | None = None) -> hooked.Hook:
        # the whole tensor: OPT's FFN works on (batch * pos, d_model) rows; every read below takes row t
        return hooked.keep(seen, key, module, when, call, batch_row=None)

    first, last = (0, len(stack.blocks) - 1) if stack.shared_blocks else (None, None)  # ALBERT: calls
    hooks = [keep("entry", stack.blocks[0].module, "pre", first)]
    if stack.final_norm is not None:
        hooks.append(keep("final", stack.final_norm, "pre"))
    else:  # post-norm: the last block's last norm writes the final stream
        hooks.append(keep("final", stack.blocks[-1].ffn_add_norm, "post", last))
    if head is not None:
        hooks += [keep("head z", head[0], "post"), keep("head a", head[1], "pre")]
    for i, block in enumerate(stack.blocks):
        call = i if stack.shared_blocks else None
        kinds = [
            ("", block.attn, block.attn_out, block.attn_add_norm),
            ("cross ", block.cross, block.cross_out, block.cross_add_norm),
        ]
        for label, att, out, add_norm in kinds:
            if att is None:
                continue
            hooks.append(keep((label, "z", i), att.o, "pre", call))  # the heads' outputs side by side
            hooks.append(keep((label, "o", i), att.o, "post", call))
            if post:
                hooks.append(keep((label, "norm", i), add_norm, "pre", call))
        hooks.append(keep(("ffn", i), block.ffn_out, "post", call))
        if post:
            hooks.append(keep(("ffn norm", i), block.ffn_add_norm, "pre", call))
    out = hooked.run(loaded, probe.inputs, hooks, **hooked.options(model))
    t = probe.position
    logits = out.logits[0, t].float()
    diff = float(logits[want.token_id] - (logits[other.token_id] if other else 0.0))

    def at_t(key) -> torch.Tensor:
        found = seen[key]
        return found.reshape(-1, found.shape[-1])[t].float()

    x = at_t("final")  # the stream the final norm or the head reads
    parts = _Parts(x.shape[-1], x.device)
    parts.add("embeddings", None, None, at_t("entry"))
    for i, block in enumerate(stack.blocks):
        for label, att, sandwich, add_norm in (
            ("", block.attn, block.attn_post_norm, block.attn_add_norm),
            ("cross ", block.cross, None, block.cross_add_norm),
        ):
            if att is None:
                continue
            z = at_t((label, "z", i))  # (head * d_head,)
            w_o = Proj(att.o).weight().float().to(z.device)  # (d_model, head * d_head)
            w_o = w_o.view(w_o.shape[0], att.n_heads, att.d_head)  # (d_model, head, d_head)
            per_head = torch.einsum("mhd,hd->hm", w_o, z.view(att.n_heads, att.d_head))  # (head, d_model)
            bias = Proj(att.o).bias()
            r = 1.0
            if sandwich is not None:  # the sandwich norm: one scale per position from the whole output
                r = post_scale(sandwich, at_t((label, "o", i)))
            for h in range(att.n_heads):
                parts.add(f"{label}head", i, h, per_head[h] * r)
            if bias is not None:
                parts.add(f"{label}attention bias", i, None, bias.float().to(z.device) * r)
            if post:
                parts.through_norm(add_norm, at_t((label, "norm", i)), f"{label}attention norm bias", i)
        parts.add("ffn", i, None, at_t(("ffn", i)))
        if post:
            parts.through_norm(block.ffn_add_norm, at_t(("ffn norm", i)), "ffn norm bias", i)
    parts.check(x, "read by the final norm" if stack.final_norm is not None else "at the last block's output")
    if stack.final_norm is not None:
        parts.through_norm(stack.final_norm, x, "final norm bias", None)
    project_out = at_path(getattr(model, "base_model", model), "decoder.project_out")  # OPT-350m
    if project_out is not None:
        parts.through_linear(project_out, "projection bias")
    if head is not None:
        parts.through_linear(head[0], "LM head dense bias")
        z, act = at_t("head z"), at_t("head a")
        parts.rows = parts.rows * torch.where(z != 0, act / torch.where(z != 0, z, 1.0), 0.0)
        parts.through_norm(head[1], act, "LM head norm bias", None)
    w_u = Proj(a.unembed).weight().float()  # (vocab, d_model)
    u = w_u[want.token_id] - (w_u[other.token_id] if other else 0.0)  # (d_model,)
    values = parts.rows @ (u * _logit_scale(model)).to(parts.rows.device)
    found = [Part(n, layer, h, float(v)) for (n, layer, h), v in zip(parts.meta, values, strict=True)]
    bias = torch.zeros(w_u.shape[0])
    if Proj(a.unembed).bias() is not None:
        bias = bias + Proj(a.unembed).bias().float().cpu()
    if isinstance(getattr(model, "final_logits_bias", None), torch.Tensor):  # BART, Marian, mBART
        bias = bias + model.final_logits_bias.detach().float().cpu().reshape(-1)[: bias.shape[0]]
    if bias.any():
        value = float(bias[want.token_id] - (bias[other.token_id] if other else 0.0))
        found.append(Part("unembedding bias", None, None, value))
    total = sum(p.value for p in found)
    if abs(total - diff) > SUM_TOLERANCE * max(1.0, float(logits.abs().max())):
        raise UnsupportedModel(
            f"The parts add up to {total:.4g}, not to the model's own {diff:.4g}: between the last block and "
            "the logits this model does something not attributed here."
        )
    route = (
        "every later norm on the residual path (their scales from this run)"
        if post
        else "the final norm (its scale from this run)"
    )
    if head is not None:
        route += ", the masked-LM head (its activation's gain per dimension from this run)"
    route += " and the unembedding"
    return Attribution(probe.read_tokens, t, want, other, tuple(found), diff, route)
