"""Feed-forward memory: which neurons of a layer's FFN fire on a token, what each one writes into the
residual stream (its column of the down projection), which tokens that vector promotes through the
unembedding, and how much of each layer's update comes from attention and how much from the FFN.

Every architecture is read through its anatomy (`explorer.models.anatomy`) in one hooked run: the FFN's input
(its entry module's input, after the sub-layer's norm), the neuron activations (the down projection's
input, exactly what the model computed) and the size of both residual updates of every layer.
`activations` recomputes the neurons from the FFN input and the weights: act(x W_in + b) for plain
FFNs, act(x W_gate) * (x W_up) for gated ones (Llama, Gemma, Phi-3, T5 v1.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.models import anatomy
from explorer.models.anatomy import UnsupportedModel
from explorer.runs import hooked

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel


@dataclass(frozen=True)
class FfnCapture:
    stack: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    inputs: tuple[torch.Tensor | None, ...]  # per layer: (pos, d_model) the FFN input after its norm
    activations: tuple[torch.Tensor | None, ...]  # per layer: (pos, d_ff) float32, what `down` reads
    attn_norms: np.ndarray  # (layer, pos) |what attention adds to the residual|
    ffn_norms: np.ndarray  # (layer, pos) |what the FFN adds to the residual|

    @property
    def n_layers(self) -> int:
        return len(self.inputs)


def ffn_stack(model: Any) -> str:
    """The stack this page reads: the decoder when there is one (it reads the text shifted right)."""
    return anatomy.of(model).output_stack


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(pos, features) of a batch of one: OPT flattens (batch, pos) into one dimension before its FFN."""
    return t.reshape(-1, t.shape[-1])


def _size(store: dict, key: Any):
    def fn(y: torch.Tensor) -> None:
        store[key] = _rows(y.detach()).float().norm(dim=-1).cpu()  # (pos,)

    return fn


def capture(loaded: LoadedModel, text: str, limit: int | None = None, layer: int | None = None) -> FfnCapture:
    """One forward pass: every layer's FFN input and neuron activations (only `layer`'s when given; the
    others are None) and the sizes of both residual updates of every layer, per token."""
    model = loaded.model
    stack = ffn_stack(model)
    found = anatomy.of(model).stacks[stack]
    found.blocks[0].ffn.dense()  # a mixture of experts has no one set of neurons to show
    ids = hooked.encode(model, loaded.tokenizer, text, limit)
    seen: dict = {}
    hooks = []
    for b in found.blocks:
        call = b.index if found.shared_blocks else None  # ALBERT: one module, called once per layer
        if layer is None or b.index == layer:
            hooks.append(hooked.keep(seen, ("x", b.index), b.ffn.entry, "pre", call, batch_row=None))
            hooks.append(hooked.keep(seen, ("a", b.index), b.ffn.down, "pre", call, batch_row=None))
        hooks.append(hooked.Hook(b.attn_out, "post", _size(seen, ("attn", b.index)), call))
        hooks.append(hooked.Hook(b.ffn_out, "post", _size(seen, ("ffn", b.index)), call))
    hooked.run(loaded, hooked.inputs(model, ids), hooks, **hooked.options(model, last_logits_only=True))
    n = len(found.blocks)
    missing = [i for i in range(n) if ("ffn", i) not in seen or ("attn", i) not in seen]
    missing += [i for i in range(n) if (layer is None or i == layer) and ("a", i) not in seen]
    if missing:
        raise UnsupportedModel(
            f"Layer {missing[0]} of {type(model).__name__} did not call the parts its anatomy names (its "
            "attention output, FFN entry or down projection): this model computes its FFN another way."
        )
    stack_ids = hooked.shifted(model, ids) if len(anatomy.of(model).stacks) == 2 else ids
    x = [_rows(seen[("x", i)]) if ("x", i) in seen else None for i in range(n)]
    a = [_rows(seen[("a", i)]).float().cpu() if ("a", i) in seen else None for i in range(n)]
    return FfnCapture(
        stack=stack,
        ids=tuple(stack_ids),
        tokens=tuple(display_tokens(loaded.tokenizer, stack_ids)),
        inputs=tuple(x),
        activations=tuple(a),
        attn_norms=torch.stack([seen[("attn", i)] for i in range(n)]).numpy(),
        ffn_norms=torch.stack([seen[("ffn", i)] for i in range(n)]).numpy(),
    )


def activations(model: Any, stack: str, layer: int, x: torch.Tensor) -> torch.Tensor:
    """(pos, d_ff): each neuron's activation, the input of the down projection, from the FFN's input x
    (pos, d_model), computed from the weights."""
    return anatomy.of(model).blocks(stack)[layer].ffn.activations(x).cpu()


def formula(model: Any) -> str:
    """LaTeX of the activation the page shows: gated or plain, from the anatomy of the FFN."""
    if anatomy.of(model).blocks(ffn_stack(model))[0].ffn.gated:
        return r"a = \mathrm{act}(x W_{gate}) \odot (x W_{up})"
    return r"a = \mathrm{act}(x W_{in} + b_{in})"


def out_vectors(model: Any, stack: str, layer: int, neurons: list[int]) -> torch.Tensor:
    """(len(neurons), d_model): what each neuron writes per unit of activation (down projection columns)."""
    return anatomy.of(model).blocks(stack)[layer].ffn.out_vectors(neurons)


def final_norm_scale(model: Any) -> tuple[torch.Tensor | None, str]:
    """The decoder's final norm scale gamma (d_model,) and its name; (None, "") when the stack read here
    ends without a norm (post-norm models: every block ends in its own)."""
    norm = anatomy.of(model).stacks[ffn_stack(model)].final_norm
    if norm is None:
        return None, ""
    found = anatomy.norm_of(norm)
    name = f"final {'LayerNorm' if found.centred else 'RMSNorm'} scale"
    return found.gain, name + (" (1 + weight)" if found.one_plus else "")


def can_unembed(model: Any, stack: str | None = None) -> bool:
    """Models whose stack (default: the one this page reads) is a causal decoder with an LM head: its FFN
    outputs can be read as next-token logits. Encoders are not: their masked-LM head transforms a vector
    (dense, activation, LayerNorm) before its unembedding, and it predicts masked tokens, not next ones."""
    found = anatomy.of(model)
    name = stack or found.output_stack
    return found.unembed is not None and name == "decoder" and found.stacks[name].causal


def _logit_scale(model: Any) -> float:
    """T5 multiplies the decoder's output by d_model^-0.5 before its LM head (scale_decoder_outputs)."""
    config = model.config
    return float(config.d_model) ** -0.5 if getattr(config, "scale_decoder_outputs", False) else 1.0


def promoted(
    model: Any, vectors: torch.Tensor, k: int = 8, through_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each vector w (n, d_model): the logits W_U (gamma * w) (or W_U w), top-k and bottom-k.
    Returns (top values, top ids, bottom values, bottom ids), each (n, k)."""
    w_u = anatomy.Proj(anatomy.of(model).unembed).weight()  # (vocab, d_model)
    v = vectors.float() * _logit_scale(model)
    if through_norm:
        gamma, _ = final_norm_scale(model)
        if gamma is not None:
            v = v * gamma
    with torch.no_grad():
        logits = (w_u.float() @ v.T.to(w_u.device)).T.cpu()  # (n, vocab)
    top = logits.topk(k, dim=-1)
    bottom = logits.topk(k, dim=-1, largest=False)
    return top.values, top.indices, bottom.values, bottom.indices


@dataclass(frozen=True)
class Pushers:
    """The neurons of one layer ranked by how much they push one token's logit at one position."""

    neurons: np.ndarray  # (k,) neuron indices, largest effect first
    activations: np.ndarray  # (k,) their activations at the position
    per_unit: np.ndarray  # (k,) the token's logit per unit of activation: W_U[token] . (gamma * w_out)
    effects: np.ndarray  # (k,) activation * per_unit: what the neuron adds to the token's logit there


def pushers(
    model: Any,
    stack: str,
    layer: int,
    token_id: int,
    acts: torch.Tensor,
    k: int = 10,
    through_norm: bool = True,
) -> Pushers:
    """Which neurons of `layer` push the logit of `token_id` most, given their activations `acts` (d_ff,) at
    one position: the direct effect a_n W_U[token] . (gamma * w_n), the final norm's scale applied as in
    `promoted` (its division by the vector's size left out, as in the logit lens)."""
    w_u = anatomy.Proj(anatomy.of(model).unembed).weight()
    n = acts.shape[-1]
    with torch.no_grad():
        row = w_u[token_id].float() * _logit_scale(model)
        if through_norm:
            gamma, _ = final_norm_scale(model)
            if gamma is not None:
                row = row * gamma.float().to(row.device)
        outs = out_vectors(model, stack, layer, list(range(n))).float().to(row.device)  # (d_ff, d_model)
        per_unit = (outs @ row).cpu()
    effects = acts.float() * per_unit
    order = effects.argsort(descending=True)[:k]
    return Pushers(
        order.numpy(), acts[order].float().numpy(), per_unit[order].numpy(), effects[order].numpy()
    )
