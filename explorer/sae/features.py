"""What the pages and the command line read from a sparse autoencoder on a loaded model: the features that
fire on each token of a text, a feature's dashboard (its top contexts and histogram from the files saved
at training time, the tokens it promotes and suppresses through the unembedding), search, steering, and
the quality figures of a model card (`evaluate`).

The SAE reads the residual stream entering block `sae.layer` (explorer.models.anatomy's blocks of the
stack that predicts); an SAE of the last block's output reads what enters the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.anatomy import Proj
from explorer.runs import hooked
from explorer.sae.sae import Sae

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

CONTEXTS = "contexts.safetensors"


def reads(loaded: LoadedModel, sae: Sae) -> tuple[object, int | None]:
    """(module, call) whose forward input is the stream the SAE reads; InputError when the SAE does not
    fit this model."""
    return reads_in(loaded.model, sae, loaded.card.name)


def reads_in(model, sae: Sae, name: str = "This model") -> tuple[object, int | None]:
    """reads() for a bare model (what a steering hook is given)."""
    module, call, _ = _reading(model, sae, name)
    return module, call


def _reading(model, sae: Sae, name: str) -> tuple[object, int | None, list]:
    """reads_in(), and the modules after that point in its stack whose other inputs a pass branched there
    widens (hooked.branch): the later blocks, the one shared block for its later calls, none after the
    final norm."""
    a = anatomy.of(model)
    stack = a.stacks[a.output_stack]
    d_model = Proj(a.unembed).weight().shape[1] if a.unembed is not None else None
    if d_model is not None and d_model != sae.d_in:
        raise InputError(
            f"This SAE reads vectors of {sae.d_in} numbers; {name}'s residual stream has {d_model}."
        )
    if sae.layer < len(stack.blocks):
        if stack.shared_blocks:
            return stack.blocks[sae.layer].module, sae.layer, [stack.blocks[sae.layer].module]
        return stack.blocks[sae.layer].module, None, [b.module for b in stack.blocks[sae.layer + 1 :]]
    if sae.layer == len(stack.blocks) and stack.final_norm is not None:
        return stack.final_norm, None, []
    raise InputError(f"This SAE reads layer {sae.layer}; the model has {len(stack.blocks)} blocks.")


def stream(loaded: LoadedModel, sae: Sae, ids: list[int] | torch.Tensor) -> torch.Tensor:
    """(pos, d_in) the stream the SAE reads, for one sequence of token ids."""
    seen: dict = {}
    module, call = reads(loaded, sae)
    ids = torch.as_tensor(ids).reshape(1, -1)
    hooked.run(loaded, {"input_ids": ids}, [hooked.keep(seen, "x", module, "pre", call)],
               **hooked.options(loaded.model, last_logits_only=True))  # fmt: skip
    return seen["x"].float()


# -- per token ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenFeatures:
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    acts: np.ndarray  # (pos, d_sae) float32
    first_skipped: bool  # the first position (the attention sink) is not read: the SAE never saw it

    def top(self, pos: int, n: int = 8) -> list[tuple[int, float]]:
        row = self.acts[pos]
        order = np.argsort(-row)[:n]
        return [(int(i), float(row[i])) for i in order if row[i] > 0]

    def to_rows(self, n: int = 8) -> list[dict]:
        return [
            {"pos": p, "token": t, "top": [{"feature": f, "activation": a} for f, a in self.top(p, n)]}
            for p, t in enumerate(self.tokens)
        ]


def on_text(loaded: LoadedModel, sae: Sae, text: str) -> TokenFeatures:
    """The SAE's features on every token of `text` (as the tokenizer adds special tokens). The first
    position is left at zero: it is the attention sink, whose stream the SAE was not trained on."""
    ids = hooked.encode(loaded.model, loaded.tokenizer, text)
    x = stream(loaded, sae, ids)
    acts = sae.encode(x).cpu().numpy()
    acts[0] = 0.0
    return TokenFeatures(tuple(display_tokens(loaded.tokenizer, ids)), tuple(ids), acts, True)


# -- one feature ----------------------------------------------------------------------------------


def logit_weights(loaded: LoadedModel, sae: Sae) -> torch.Tensor:
    """(d_sae, vocab): what each feature's decoder direction adds to every logit through the final norm's
    gain and the unembedding (the norm's scale left out: it depends on the whole stream)."""
    a = anatomy.of(loaded.model)
    w_u = Proj(a.unembed).weight().float().cpu()  # (vocab, d_model)
    final = a.stacks[a.output_stack].final_norm
    gain = anatomy.norm_of(final).gain.cpu() if final is not None else torch.ones(w_u.shape[1])
    return (sae.W_dec.cpu() * gain) @ w_u.T


@dataclass(frozen=True)
class Dashboard:
    feature: int
    frequency: float | None  # share of training tokens it fires on
    contexts: list[tuple[list[str], list[float], float]]  # (window tokens, activations, top activation)
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    hist_counts: np.ndarray | None  # (bins,)
    hist_max: float | None


def _saved(sae: Sae, name: str) -> dict[str, torch.Tensor] | None:
    """The tensors of file `name` in the SAE's folder, or None where it has none."""
    path = None if sae.folder is None else Path(sae.folder) / name
    if path is None or not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(path)


def saved_contexts(sae: Sae) -> dict[str, torch.Tensor] | None:
    return _saved(sae, CONTEXTS)


def dashboard(loaded: LoadedModel, sae: Sae, feature: int, weights: torch.Tensor | None = None,
              contexts: dict | None = None, n: int = 10) -> Dashboard:  # fmt: skip
    if not 0 <= feature < sae.d_sae:
        raise InputError(f"There is no feature {feature}: this SAE has {sae.d_sae} (0 to {sae.d_sae - 1}).")
    weights = logit_weights(loaded, sae) if weights is None else weights
    row = weights[feature]
    up, down = row.topk(n), (-row).topk(n)
    tok = loaded.tokenizer
    promoted = list(zip(display_tokens(tok, up.indices.tolist()), up.values.tolist()))
    suppressed = list(zip(display_tokens(tok, down.indices.tolist()), (-down.values).tolist()))
    found, freq, counts, top = [], None, None, None
    if contexts is not None:
        ids, acts = contexts["context_ids"][feature], contexts["context_acts"][feature].float()
        for window, a, best in zip(ids, acts, contexts["top_acts"][feature].tolist()):
            if best <= 0:
                continue
            keep = window >= 0
            found.append((display_tokens(tok, window[keep].tolist()), a[keep].tolist(), best))
        freq = float(contexts["frequency"][feature])
        counts = contexts["hist_counts"][feature].numpy()
        top = float(contexts["hist_max"][feature])
    return Dashboard(feature, freq, found, promoted, suppressed, counts, top)


def search_by_token(
    loaded: LoadedModel, weights: torch.Tensor, token: str, n: int = 10
) -> list[tuple[int, float]]:
    """The features that promote `token` (its first token) most through the unembedding."""
    ids = loaded.tokenizer(token, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"{token!r} gives no token with this tokenizer.")
    col = weights[:, ids[0]]
    top = col.topk(n)
    return list(zip(top.indices.tolist(), top.values.tolist()))


def context_texts(loaded: LoadedModel, contexts: dict) -> list[str]:
    """Each feature's top contexts as one lower-case text (for search_contexts)."""
    tok = loaded.tokenizer
    ids = contexts["context_ids"]
    return ["\n".join(tok.decode(w[w >= 0].tolist()) for w in ids[f]).lower() for f in range(ids.shape[0])]


def search_contexts(texts: list[str], word: str, n: int = 20) -> list[int]:
    """Features with `word` (case-insensitive) in the text of their top contexts (`context_texts`), most
    hits first."""
    word = word.strip().lower()
    if not word:
        raise InputError("Type a word to look for in the features' top contexts.")
    hits = [(text.count(word), f) for f, text in enumerate(texts)]
    return [f for count, f in sorted(hits, key=lambda cf: (-cf[0], cf[1])) if count][:n]


# -- steering -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSteer:
    """Adds `value` times the feature's decoder direction to the stream the SAE reads (mode "add"), or
    sets the feature's activation to `value` there (mode "clamp": the stream gets (value - f(x)) times the
    direction, f(x) its activation by the SAE), at every position but the first, on every pass."""

    sae: Sae
    feature: int
    value: float
    mode: str = "add"

    @property
    def layer(self) -> int:
        return self.sae.layer

    @property
    def coef(self) -> float:
        return self.value

    def hook(self, model) -> hooked.Hook:
        direction = self.sae.W_dec[self.feature]

        def fn(x: torch.Tensor) -> torch.Tensor:
            d = direction.to(x.device, torch.float32)
            if self.mode == "clamp":
                f = self.sae.encode(x)[..., self.feature : self.feature + 1]  # (batch, pos, 1)
                change = (self.value - f) * d
            else:
                change = self.value * d.expand_as(x)
            if x.shape[1] > 1:  # a whole prompt: its first position, the attention sink, is left alone
                change = change.clone()
                change[:, :1] = 0
            return x + change.to(x.dtype)

        module, call = reads_in(model, self.sae)
        return hooked.Hook(module, "pre", fn, call)


# -- quality --------------------------------------------------------------------------------------


EVALUATION = "evaluation.safetensors"  # a card's per-batch sums, beside cfg.json
SUMS = ("l0", "err", "n", "ce_clean", "ce_sae", "ce_zero", "ce_n", "x_sq")  # the columns of parts["sums"]
KINDS = ("clean", "sae", "zero")
BATCH = 4  # sequences per batch: a card's rows are per BATCH sequences


def evaluate(loaded: LoadedModel, sae: Sae, ids: torch.Tensor, batch: int = BATCH) -> dict:
    """A model card's figures on sequences `ids` (n, ctx): figures(measure(...))."""
    return figures(measure(loaded, sae, ids, batch))


def measure(
    loaded: LoadedModel, sae: Sae, ids: torch.Tensor, batch: int = BATCH, only: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """What a model card's figures are made of, one row per batch of `batch` sequences of `ids` (n, ctx)
    (the batches numbered in `only`, else all): "sums" (the SUMS: active latents, squared reconstruction
    error, positions, the three next-token cross-entropies summed and the targets they are summed over,
    the stream's squared norm), "x_sum" (the stream summed over positions), "fired" (the latents active
    somewhere in the batch). Every position but the first; the clean run, the SAE's reconstruction in place
    of the stream and the stream zeroed share one pass up to where the SAE reads (hooked.branch); on the
    architectures whose model code cannot take a batch that grows in the middle (Bloom's ALiBi,
    GPT-BigCode), they are three passes. A card keeps these beside its figures (EVALUATION), so that a
    check can rerun a few batches and find the rest where the figures came from."""
    module, call, later = _reading(loaded.model, sae, loaded.card.name)
    rows = {"sums": [], "x_sum": [], "fired": []}
    branched = True

    def version(kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == "clean":
            return x
        y = x.clone()
        y[:, 1:] = sae(x[:, 1:]).to(x.dtype) if kind == "sae" else 0.0
        return y

    for number in range(-(-len(ids) // batch)) if only is None else only:
        chunk = ids[number * batch : (number + 1) * batch]
        seen: dict = {}

        def three(x: torch.Tensor) -> torch.Tensor:
            seen["x"] = x.detach().clone()
            return torch.cat([version(kind, x) for kind in KINDS])

        logits = None
        if branched:
            hooks = hooked.branch(module, later, three, len(chunk), len(KINDS), call)
            try:
                logits = hooked.run(loaded, {"input_ids": chunk}, hooks, use_cache=False).logits
                logits = logits.split(len(chunk))
            except RuntimeError:  # a shape the model code computes from its input's batch
                branched = False
        if logits is None:
            logits = []
            for kind in KINDS:
                if kind == "clean":
                    hook = hooked.keep(seen, "x", module, "pre", call, batch_row=None)
                else:
                    hook = hooked.Hook(module, "pre", lambda x, kind=kind: version(kind, x), call)
                logits.append(hooked.run(loaded, {"input_ids": chunk}, [hook], use_cache=False).logits)
        targets = chunk[:, 1:].reshape(-1)
        sums = dict.fromkeys(SUMS, 0.0)
        for kind, out in zip(KINDS, logits):
            out = out[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), targets, reduction="sum")
            sums[f"ce_{kind}"] = float(ce)
        sums["ce_n"] = targets.numel()
        x = seen["x"][:, 1:].reshape(-1, sae.d_in).float()
        f = sae.encode(x)
        sums["l0"] = float((f > 0).sum())
        sums["err"] = float((sae.decode(f) - x).pow(2).sum())
        sums["n"] = len(x)
        sums["x_sq"] = float(x.double().pow(2).sum())
        rows["sums"].append(torch.tensor([sums[k] for k in SUMS], dtype=torch.float64))
        rows["x_sum"].append(x.double().sum(0))
        rows["fired"].append((f > 0).any(0))
    return {k: torch.stack(v) for k, v in rows.items()}


def figures(parts: dict[str, torch.Tensor]) -> dict:
    """A model card's figures from measure()'s rows: L0, the fraction of variance unexplained, the dead
    latents (never active), the three mean cross-entropies and the loss recovered, (zeroed - SAE) /
    (zeroed - clean)."""
    s = dict(zip(SUMS, parts["sums"].sum(0).tolist()))
    n = s["n"]
    total_var = s["x_sq"] - float((parts["x_sum"].sum(0) ** 2).sum()) / n
    ce = {k: s[f"ce_{k}"] / s["ce_n"] for k in KINDS}
    return {
        "l0": s["l0"] / n, "fvu": s["err"] / total_var, "dead": int((~parts["fired"].any(0)).sum()),
        "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"],
        "loss_recovered": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]), "tokens": int(n),
    }  # fmt: skip


def saved_evaluation(sae: Sae) -> dict[str, torch.Tensor] | None:
    """The card's measure() rows saved beside it, or None (an SAE from elsewhere)."""
    return _saved(sae, EVALUATION)
