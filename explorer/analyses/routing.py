"""Expert routing of mixture-of-experts models: which experts each layer's router picks for each token,
and with what weights.

Supported routers (transformers 5.24, read in its modeling code): Mixtral, Qwen2-MoE, Qwen3-MoE and
OLMoE. Each has a `...TopKRouter` module (`mlp.gate` / `block_sparse_moe.gate`) whose forward returns
(router_logits (tokens, experts), top-k weights (tokens, k), top-k expert indices (tokens, k)): the
logits' softmax, its k largest entries, renormalized to sum to 1 (Mixtral always; the others when
`norm_topk_prob`). A hook of one `hooked.run` reads that output, so the weights shown are the ones the
model used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.runs import hooked

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel

ROUTERS = ("MixtralTopKRouter", "Qwen2MoeTopKRouter", "Qwen3MoeTopKRouter", "OlmoeTopKRouter")
SUPPORTED = "Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE"
MAX_TOKENS = 512


class NoExperts(InputError):
    """The model has no routers this module reads."""


@dataclass(frozen=True)
class Routing:
    tokens: tuple[str, ...]
    layers: tuple[int, ...]  # the layer of each router, in order
    probs: np.ndarray  # [router, pos, expert]: the router's softmax over all experts
    weights: np.ndarray  # [router, pos, expert]: the weight each chosen expert got (0: not chosen)
    top_k: int

    @property
    def n_experts(self) -> int:
        return self.probs.shape[2]

    def usage(self) -> np.ndarray:
        """[router, expert]: how many tokens chose each expert."""
        return (self.weights > 0).sum(1)


def routers(model: Any) -> list[tuple[int, Any]]:
    """(layer, router module) of every supported router, in layer order."""
    found = []
    for name, module in model.named_modules():
        if type(module).__name__ in ROUTERS:
            numbers = re.findall(r"\.(\d+)\.", f".{name}.")
            found.append((int(numbers[0]) if numbers else len(found), module))
    return sorted(found, key=lambda x: x[0])


def has_experts(model: Any) -> bool:
    return bool(routers(model))


def route(loaded: LoadedModel, text: str, limit: int = MAX_TOKENS) -> Routing:
    """One forward pass of `text`, recording every router's output; NoExperts for a model without
    supported routers."""
    model, tok = loaded.model, loaded.tokenizer
    found = routers(model)
    if not found:
        raise NoExperts(
            f"{type(model).__name__} has no experts: routing is for mixture-of-experts models ({SUPPORTED})."
        )
    ids = hooked.encode(model, tok, text, limit)
    kept: dict[int, tuple] = {}

    def keep(i: int):
        def fn(output: tuple) -> None:
            logits, scores, indices = output[:3]  # (pos, expert), (pos, k), (pos, k)
            kept[i] = (logits.detach().float().cpu(), scores.detach().float().cpu(), indices.detach().cpu())

        return fn

    hooks = [hooked.Hook(module, "post", keep(i), whole=True) for i, (_, module) in enumerate(found)]
    hooked.run(loaded, hooked.inputs(model, ids), hooks, **hooked.options(model, last_logits_only=True))
    n, experts = len(ids), kept[0][0].shape[-1]
    probs = np.zeros((len(found), n, experts), dtype=np.float32)
    weights = np.zeros_like(probs)
    for i in range(len(found)):
        logits, scores, indices = kept[i]
        probs[i] = torch.softmax(logits, -1).numpy()
        np.put_along_axis(weights[i], indices.numpy(), scores.numpy(), axis=-1)
    return Routing(
        tokens=tuple(display_tokens(tok, ids)),
        layers=tuple(layer for layer, _ in found),
        probs=probs,
        weights=weights,
        top_k=int(kept[0][2].shape[-1]),
    )
