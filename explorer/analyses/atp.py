"""Attribution patching: the gradient approximation of activation patching (causal tracing), from one
forward and one backward pass on the corrupted prompt and one forward pass on the clean one.

Exact patching copies the clean activation a_clean into the corrupted run and measures the logit
difference LD. Its first-order approximation around the corrupted run is

    LD(patched) - LD(corrupt) ≈ (a_clean - a_corrupt) · ∂LD/∂a   (at the corrupted run)

which this module computes for every kind, layer and position at once, as the same share of the clean vs
corrupt difference that `experiments.patch` reports. It is exact where LD is linear in the activation and
drifts where it is not: the page draws both, with their correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.analyses import experiments
from explorer.analyses.experiments import KINDS, Patching, _call, _hook_point, _ld
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel


def _with_embeddings(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inputs with token ids replaced by their embeddings, as leaves that take gradients, so that
    every activation of the pass is in the graph."""
    embed = model.get_input_embeddings()
    out = {k: v for k, v in inputs.items() if k not in ("input_ids", "decoder_input_ids")}
    out["inputs_embeds"] = embed(inputs["input_ids"]).detach().requires_grad_()
    if "decoder_input_ids" in inputs:
        out["decoder_inputs_embeds"] = embed(inputs["decoder_input_ids"]).detach().requires_grad_()
    return out


def approximate(
    loaded: LoadedModel, clean: str, corrupt: str, target: str, foil: str, kinds: Sequence[str] = KINDS,
    prefix: str = "", stack: str | None = None,
) -> Patching:  # fmt: skip
    """The attribution-patching estimate of `experiments.patch` for the same arguments."""
    a, b = experiments.patch_probes(loaded, clean, corrupt, prefix, stack)
    t = experiments.target_token(loaded, a, target)
    f = experiments.target_token(loaded, a, foil, "foil")
    if t.token_id == f.token_id:
        raise experiments.ExperimentError(f"The target and the foil are the same token ({t.token!r}).")
    ld_clean = float(_ld(experiments.clean_logits(loaded, a), t, f))
    cache = experiments.cache_activations(loaded, a, kinds)  # the clean activations
    model = loaded.model
    layers = experiments.n_layers(model, b.stack)
    seen: dict = {}

    def grab(key) -> hooked.Fn:
        def fn(x: torch.Tensor) -> None:
            x.retain_grad()
            seen[key] = x

        return fn

    hooks = [hooked.Hook(*_hook_point(model, b.stack, kind, i), grab((kind, i)), _call(model, b.stack, i))
             for kind in kinds for i in range(layers)]  # fmt: skip
    with loaded.lock, torch.enable_grad():
        handles = hooked.attach(hooks)
        try:
            out = model(**_with_embeddings(model, b.inputs), **hooked.options(model))
            ld = _ld(out.logits[0, b.position].float(), t, f)
            ld.backward()
        finally:
            for handle in handles:
                handle.remove()
    ld_corrupt = float(ld.detach())
    if abs(ld_clean - ld_corrupt) < 1e-6:
        raise experiments.ExperimentError("Both prompts give the same logit difference: nothing to restore.")
    restored = {}
    for kind in kinds:
        rows = []
        for i in range(layers):
            x = seen[(kind, i)]
            d = x.shape[-1]
            change = cache[kind][i].reshape(-1, d).float() - x.detach().reshape(-1, d).float()
            rows.append((change * x.grad.reshape(-1, d).float()).sum(-1) / (ld_clean - ld_corrupt))
        restored[kind] = torch.stack(rows).cpu().numpy().astype(np.float32)
    return Patching(b.tokens, a.tokens, t, f, ld_clean, ld_corrupt, restored)


def correlation(exact: np.ndarray, approx: np.ndarray) -> float:
    """Pearson correlation of the two grids (nan when either is constant)."""
    x, y = exact.ravel().astype(np.float64), approx.ravel().astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
