"""Steering: a vector added to a decoder's residual stream at one layer, at every position and every
generation step, made from a contrast of prompts (activation addition). An encoder-decoder is steered in
its encoder: the vector, made from the prompts read as sources, is added to the encoder's stream at every
source position, and the decoder reads the steered source.

The vector is the mean over prompts of the mean over the prompt's positions (after a start token, see
`_mean_stream`) of the residual stream entering block `layer` (what the block reads), for the `plus`
prompts minus the same for the `minus` prompts; the
steered model adds `coef` times it to that stream. With the KV cache, positions already read keep the
keys and values they were computed with, steered as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from explorer.errors import InputError
from explorer.models import anatomy
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel


@dataclass(frozen=True)
class Steer:
    layer: int
    coef: float
    vector: torch.Tensor  # (d_model,) float32, mean(plus) - mean(minus)
    plus: tuple[str, ...]
    minus: tuple[str, ...]
    stack: str = "decoder"  # encoder-decoders: "encoder"

    def hook(self, model) -> hooked.Hook:
        """The pre-hook on block `layer` that adds coef * vector to every position it reads."""
        block = anatomy.of(model).blocks(self.stack)[self.layer].module
        add = self.coef * self.vector

        def fn(x: torch.Tensor) -> torch.Tensor:
            return x + add.to(x.device, x.dtype)

        return hooked.Hook(block, "pre", fn)


def _mean_stream(loaded: LoadedModel, prompt: str, layer: int, stack: str = "decoder") -> torch.Tensor:
    """The residual stream entering `layer`, averaged over the prompt's own tokens. The first position of
    a decoder's input takes an outsized vector (the attention sink: SmolLM2's is about 8 times the
    others' at layer 6), so the prompt is read after a start token (the tokenizer's own, else its
    end-of-text token) which is left out of the mean. An encoder reads the prompt as a source, with its
    special tokens, and every position counts."""
    model, tok = loaded.model, loaded.tokenizer
    ids = hooked.encode(model, tok, prompt)
    if stack == "encoder":
        seen: dict = {}
        block = anatomy.of(model).blocks("encoder")[layer].module
        with loaded.lock, torch.no_grad():
            handles = hooked.attach([hooked.keep(seen, "x", block, "pre")])
            try:
                model.get_encoder()(input_ids=torch.tensor([ids], device=anatomy.input_device(model)))
            finally:
                for handle in handles:
                    handle.remove()
        return seen["x"].float().mean(0)
    special = set(tok.all_special_ids)
    if ids[0] not in special:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = ([start] if start is not None else []) + ids
    seen: dict = {}
    block = anatomy.of(model).blocks("decoder")[layer].module
    hooked.run(loaded, hooked.inputs(model, ids), [hooked.keep(seen, "x", block, "pre")],
               **hooked.options(model, last_logits_only=True))  # fmt: skip
    x = seen["x"].float()  # (pos, d_model)
    return (x[1:] if x.shape[0] > 1 else x).mean(0)  # the mean over the prompt's own positions


def build(loaded: LoadedModel, plus: list[str], minus: list[str], layer: int, coef: float) -> Steer:
    """The steering vector of `plus` against `minus` (each one prompt or several) at `layer`."""
    model = loaded.model
    a = anatomy.of(model)
    if a.stack_names == ("encoder",):
        raise InputError(
            "Steering changes what a model writes: load a decoder (SmolLM2, Gemma) or an encoder-decoder."
        )
    stack = "encoder" if len(a.stack_names) == 2 else "decoder"
    n = a.n_layers(stack)
    if not 0 <= layer < n:
        raise InputError(f"The steering layer must be between 0 and {n - 1}.")
    plus = [p for p in plus if p.strip()]
    minus = [p for p in minus if p.strip()]
    if not plus or not minus:
        raise InputError("Steering needs a prompt to steer toward and one to steer away from.")
    means = [
        torch.stack([_mean_stream(loaded, p, layer, stack) for p in side]).mean(0) for side in (plus, minus)
    ]
    return Steer(layer, float(coef), means[0] - means[1], tuple(plus), tuple(minus), stack)
