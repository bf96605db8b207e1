"""Feed-forward memory: which neurons of a layer's FFN fire on a token, what each one writes into the
residual stream (its column of the down projection), which tokens that vector promotes through the
unembedding, and how much of each layer's update comes from attention and how much from the FFN.

Neuron activations are computed here from the FFN's input (recorded by a forward pre-hook) and its
weights: act(x W_in + b) for plain FFNs, act(x W_gate) * (x W_up) for gated ones (Llama, Gemma).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from explorer import blocks
from explorer.hidden import final_norm
from explorer.tokens import display_tokens


@dataclass(frozen=True)
class FfnCapture:
    stack: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    inputs: tuple[torch.Tensor | None, ...]  # per layer: (pos, d_model) the FFN input after its norm
    attn_norms: np.ndarray  # (layer, pos) |what attention adds to the residual|
    ffn_norms: np.ndarray  # (layer, pos) |what the FFN adds to the residual|

    @property
    def n_layers(self) -> int:
        return len(self.inputs)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def ffn_stack(model: Any) -> str:
    """The stack this page reads: the decoder when there is one (it reads the text shifted right)."""
    return blocks.stacks(model)[-1]


def capture(loaded: Any, text: str, limit: int | None = None, layer: int | None = None) -> FfnCapture:
    """One forward pass: every layer's FFN input (only `layer`'s when given; the others are None) and
    the sizes of both residual updates of every layer, per token."""
    model = loaded.model
    stack = ffn_stack(model)
    ids = blocks.encode(model, loaded.tokenizer, text, limit)
    n = len(blocks.layers(model, stack))
    inputs: dict[int, torch.Tensor] = {}
    attn: dict[int, torch.Tensor] = {}
    ffn: dict[int, torch.Tensor] = {}
    handles = []

    def pre(store: dict, i: int):
        def hook(module, args, kwargs):
            store[i] = (args[0] if args else next(iter(kwargs.values()))).detach()[0]

        return hook

    def post(store: dict, i: int):
        def hook(module, args, output):
            store[i] = _first(output).detach()[0].float().norm(dim=-1).cpu()

        return hook

    with loaded.lock:
        try:
            for i in range(n):
                p = blocks.parts(model, stack, i)
                if layer is None or i == layer:
                    handles.append(p.ffn_in.register_forward_pre_hook(pre(inputs, i), with_kwargs=True))
                handles.append(p.attn_update.register_forward_hook(post(attn, i)))
                handles.append(p.ffn_update.register_forward_hook(post(ffn, i)))
            with torch.no_grad():
                model(**blocks.model_inputs(model, ids, blocks.input_device(model)))
        finally:
            for h in handles:
                h.remove()
    stack_ids = ids if len(blocks.stacks(model)) == 1 else blocks.decoder_input(model, ids)
    return FfnCapture(
        stack=stack,
        ids=tuple(stack_ids),
        tokens=tuple(display_tokens(loaded.tokenizer, stack_ids)),
        inputs=tuple(inputs.get(i) for i in range(n)),
        attn_norms=torch.stack([attn[i] for i in range(n)]).numpy(),
        ffn_norms=torch.stack([ffn[i] for i in range(n)]).numpy(),
    )


def _linear(x: torch.Tensor, lin: Any) -> torch.Tensor:
    y = x @ lin.weight.float().T
    return y + lin.bias.float() if lin.bias is not None else y


def activations(model: Any, stack: str, layer: int, x: torch.Tensor) -> torch.Tensor:
    """(pos, d_ff): each neuron's activation, the input of the down projection, from the FFN's input x."""
    kind = blocks.style(model)
    block = blocks.layers(model, stack)[layer]
    x = x.detach().float()
    with torch.no_grad():
        if kind in ("llama", "gemma3"):
            mlp = block.mlp
            return (mlp.act_fn(_linear(x, mlp.gate_proj)) * _linear(x, mlp.up_proj)).cpu()
        if kind == "gpt2":
            fc = block.mlp.c_fc  # Conv1D: y = x W + b
            return block.mlp.act(x @ fc.weight.float() + fc.bias.float()).cpu()
        if kind == "bert":
            inter = block.intermediate
            return inter.intermediate_act_fn(_linear(x, inter.dense)).cpu()
        if kind == "t5":
            ff = block.layer[-1].DenseReluDense
            if hasattr(ff, "wi_0"):
                return (ff.act(_linear(x, ff.wi_0)) * _linear(x, ff.wi_1)).cpu()
            return ff.act(_linear(x, ff.wi)).cpu()
        return block.activation_fn(_linear(x, block.fc1)).cpu()  # bart


def formula(model: Any) -> str:
    """LaTeX of the activation the page shows for this family."""
    kind = blocks.style(model)
    if kind in ("llama", "gemma3") or (kind == "t5" and model.config.is_gated_act):
        return r"a = \mathrm{act}(x W_{gate}) \odot (x W_{up})"
    return r"a = \mathrm{act}(x W_{in} + b_{in})"


def out_vectors(model: Any, stack: str, layer: int, neurons: list[int]) -> torch.Tensor:
    """(len(neurons), d_model): what each neuron writes per unit of activation (down projection columns)."""
    down = blocks.parts(model, stack, layer).ffn_down
    w = down.weight.detach().float()
    if blocks.style(model) == "gpt2":  # Conv1D stores (d_ff, d_model)
        return w[neurons].cpu()
    return w[:, neurons].T.cpu()


def final_norm_scale(model: Any) -> tuple[torch.Tensor | None, str]:
    """The decoder's final norm scale gamma (d_model,) and its name; Gemma stores gamma - 1."""
    kind = blocks.style(model)
    norm = final_norm(model) if kind in ("gpt2", "llama", "gemma3") else None
    if norm is None:
        return None, ""
    gamma = norm.weight.detach().float().cpu()
    if kind == "gemma3":
        return 1.0 + gamma, "final RMSNorm scale (1 + weight)"
    return gamma, "ln_f (LayerNorm) scale" if kind == "gpt2" else "final RMSNorm scale"


def can_unembed(model: Any) -> bool:
    """Decoder-only models with an LM head: their FFN outputs can be read as token logits."""
    return blocks.style(model) in ("gpt2", "llama", "gemma3") and model.get_output_embeddings() is not None


def promoted(
    model: Any, vectors: torch.Tensor, k: int = 8, through_norm: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each vector w (n, d_model): the logits W_U (gamma * w) (or W_U w), top-k and bottom-k.
    Returns (top values, top ids, bottom values, bottom ids), each (n, k)."""
    w_u = model.get_output_embeddings().weight.detach()  # (vocab, d_model)
    v = vectors.float()
    if through_norm:
        gamma, _ = final_norm_scale(model)
        if gamma is not None:
            v = v * gamma
    with torch.no_grad():
        logits = (w_u.float() @ v.T.to(w_u.device)).T.cpu()  # (n, vocab)
    top = logits.topk(k, dim=-1)
    bottom = logits.topk(k, dim=-1, largest=False)
    return top.values, top.indices, bottom.values, bottom.indices
