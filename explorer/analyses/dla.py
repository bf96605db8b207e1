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
the parts sum to the model's own logit difference. Post-norm models (BERT, BART) normalize the stream in
every block and masked-LM heads transform it before the unembedding: both are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from explorer.analyses import experiments, ffn
from explorer.analyses.flow import post_scale
from explorer.models import anatomy
from explorer.models.anatomy import Proj, UnsupportedModel
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
    if a.placement not in ("pre", "sandwich", "post-out"):
        raise UnsupportedModel(
            f"This model normalizes the residual stream in every block ({a.placement}-norm): what each part "
            "writes is rescaled by every later block, so it has no direct effect on the logits to attribute."
        )
    if a.unembed is None or a.stacks[a.output_stack].final_norm is None:
        raise UnsupportedModel("Direct logit attribution needs a language-model head after a final norm.")
    if not a.stacks[a.output_stack].causal:
        raise UnsupportedModel(
            "A masked-LM head transforms the stream before its unembedding: not attributed."
        )
    if getattr(model.config, "final_logit_softcapping", None):
        raise UnsupportedModel("The model soft-caps its logits, which is not a sum of parts.")
    return a


def attribute(
    loaded: LoadedModel, text: str, target: str, foil: str | None = None, prefix: str = ""
) -> Attribution:
    """The parts' direct effects on logit(target) - logit(foil) (or logit(target)) at the position that
    predicts the next token after `text` (encoder-decoders: after the decoder's `prefix`)."""
    model = loaded.model
    a = _check(model)
    probe = experiments.prepare(loaded, text, prefix, stack=a.output_stack)
    want = experiments.target_token(loaded, probe, target)
    other = experiments.target_token(loaded, probe, foil, "foil") if foil else None
    stack = a.stacks[a.output_stack]
    seen: dict = {}

    def keep(key, module, when: str, call: int | None = None) -> hooked.Hook:
        # the whole tensor: OPT's FFN works on (batch * pos, d_model) rows; every read below takes row t
        return hooked.keep(seen, key, module, when, call, batch_row=None)

    hooks = [keep("entry", stack.blocks[0].module, "pre"), keep("final", stack.final_norm, "pre")]
    for i, block in enumerate(stack.blocks):
        call = i if stack.shared_blocks else None
        kinds = [
            ("", block.attn, block.attn_out, block.attn_post_norm),
            ("cross ", block.cross, block.cross_out, None),
        ]
        for label, att, out, post in kinds:
            if att is None:
                continue
            hooks.append(keep((label, "z", i), att.o, "pre", call))  # the heads' outputs side by side
            hooks.append(keep((label, "o", i), att.o, "post", call))
        hooks.append(keep(("ffn", i), block.ffn_out, "post", call))
    out = hooked.run(loaded, probe.inputs, hooks, **hooked.options(model))
    t = probe.position
    logits = out.logits[0, t].float()
    diff = float(logits[want.token_id] - (logits[other.token_id] if other else 0.0))

    w_u = Proj(a.unembed).weight().float()  # (vocab, d_model)
    u = w_u[want.token_id] - (w_u[other.token_id] if other else 0.0)  # (d_model,)
    u = u * _logit_scale(model)
    norm = anatomy.norm_of(stack.final_norm)
    x = seen["final"].reshape(-1, seen["final"].shape[-1])[t].float()  # what enters the final norm
    eps = 1e-6 if norm.eps is None else norm.eps
    gain = norm.gain.to(x.device)
    if norm.centred:
        scale = torch.rsqrt(x.var(unbiased=False) + eps)

        def direct(c: torch.Tensor) -> float:
            return float(u.to(c.device) @ (gain * (c - c.mean()) * scale))
    else:
        scale = torch.rsqrt(x.pow(2).mean() + eps)

        def direct(c: torch.Tensor) -> float:
            return float(u.to(c.device) @ (gain * c * scale))

    parts: list[Part] = []
    written = []

    def add(name: str, layer: int | None, head: int | None, c: torch.Tensor) -> None:
        written.append(c)
        parts.append(Part(name, layer, head, direct(c)))

    add("embeddings", None, None, seen["entry"].reshape(-1, x.shape[-1])[t].float())
    for i, block in enumerate(stack.blocks):
        for label, att, post in (("", block.attn, block.attn_post_norm), ("cross ", block.cross, None)):
            if att is None:
                continue
            z = seen[(label, "z", i)].reshape(-1, att.n_heads * att.d_head)[t].float()  # (head * d_head,)
            w_o = Proj(att.o).weight().float().to(z.device)  # (d_model, head * d_head)
            w_o = w_o.view(w_o.shape[0], att.n_heads, att.d_head)  # (d_model, head, d_head)
            per_head = torch.einsum("mhd,hd->hm", w_o, z.view(att.n_heads, att.d_head))  # (head, d_model)
            bias = Proj(att.o).bias()
            r = 1.0
            if post is not None:  # the sandwich norm: one scale per position from the whole output
                o = seen[(label, "o", i)].reshape(-1, x.shape[-1])[t].float()
                r = post_scale(post, o)
            for h in range(att.n_heads):
                add(f"{label}head", i, h, per_head[h] * r)
            if bias is not None:
                add(f"{label}attention bias", i, None, bias.float().to(z.device) * r)
        add("ffn", i, None, seen[("ffn", i)].reshape(-1, x.shape[-1])[t].float())
    if norm.bias is not None:
        parts.append(Part("final norm bias", None, None, float(u @ norm.bias.to(u.device))))
    head_bias = Proj(a.unembed).bias()
    if head_bias is not None:
        b = head_bias.float()
        value = float(b[want.token_id] - (b[other.token_id] if other else 0.0))
        parts.append(Part("unembedding bias", None, None, value))
    rebuilt = torch.stack(written).sum(0)
    if float((rebuilt - x).norm()) > SUM_TOLERANCE * max(float(x.norm()), 1.0):
        raise UnsupportedModel(
            "The parts found do not add up to the stream entering the final norm (difference "
            f"{float((rebuilt - x).norm()):.3g}): this model writes to it in a way not attributed here."
        )
    return Attribution(probe.read_tokens, t, want, other, tuple(parts), diff)
