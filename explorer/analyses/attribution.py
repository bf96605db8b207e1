"""Which input tokens a prediction comes from, by Captum's methods on the token embeddings: integrated
gradients (with its convergence delta), gradient saliency, input x gradient and occlusion, beside attention
rollout (explorer.analyses.attention.rollout) for comparison.

The function attributed is f(E) = logit(target) [- logit(foil)] at the position that predicts the next
token, as a function of the input embeddings E (pos, d_model) as the embedding module returns them (Gemma's
scaling included); encoder-decoders attribute the source tokens, the decoder reading its prefix. A token's
score is the sum over its embedding dimensions (integrated gradients, input x gradient), the size of the
gradient (saliency), or f(E) - f(E with the token's embedding replaced by the baseline's) (occlusion).
The baseline B is every position holding a neutral token's embedding, padding's where it is not zero
(`_neutral`). Integrated gradients
goes from B to E in `steps` points, run as one batch, and is complete when Σ scores = f(E) - f(B): `delta`
is the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from explorer.analyses import experiments
from explorer.analyses.attention import rollout
from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models.anatomy import input_device
from explorer.runs import hooked

if TYPE_CHECKING:
    from explorer.models.loading import LoadedModel

METHODS = {
    "integrated_gradients": "Integrated gradients",
    "saliency": "Gradient saliency (size of the gradient)",
    "input_x_gradient": "Input × gradient",
    "occlusion": "Occlusion (the token's embedding replaced by a neutral token's)",
}
ROLLOUT = "attention_rollout"
DEFAULT_STEPS = 32


@dataclass(frozen=True)
class InputAttribution:
    method: str
    tokens: tuple[str, ...]  # the tokens attributed (an encoder-decoder's source)
    scores: np.ndarray  # (pos,)
    delta: float | None  # integrated gradients: Σ scores - (f(E) - f(B))
    value: float  # f(E): the model's own logit (difference)
    target: experiments.Target
    foil: experiments.Target | None

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "scores": [float(s) for s in self.scores], "delta": self.delta}


class _Objective:
    """f(E) for a batch of embeddings (batch, pos, d_model): the logit (difference) at `position` of the
    sequence that predicts (the decoder's `decoder` ids for encoder-decoders, else the embedded one)."""

    def __init__(self, model, position: int, target: int, foil: int | None, decoder: torch.Tensor | None):
        self.model = model
        self.target, self.foil = target, foil
        self.decoder = decoder  # (1, tgt) or None
        self.position = position
        self.last = decoder is None
        self.options = hooked.options(model, last_logits_only=self.last)

    @classmethod
    def of_probe(cls, loaded: LoadedModel, probe: experiments.Probe, target: int, foil: int | None):
        inputs = probe.inputs
        decoder = inputs.get("decoder_input_ids")
        position = probe.position
        if decoder is None and position != inputs["input_ids"].shape[1] - 1:  # a masked LM's mask
            me = cls(loaded.model, position, target, foil, None)
            me.last = False
            me.options = hooked.options(loaded.model)
            return me
        return cls(loaded.model, position, target, foil, decoder)

    def __call__(self, emb: torch.Tensor) -> torch.Tensor:
        batch = emb.shape[0]
        kw = dict(
            inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
        )
        if self.decoder is not None:
            kw["decoder_input_ids"] = self.decoder.expand(batch, -1)
        logits = self.model(**kw, **self.options).logits
        row = logits[:, -1] if self.last else logits[:, self.position]  # (batch, vocab)
        out = row[:, self.target]
        return out - row[:, self.foil] if self.foil is not None else out


def attribute(
    loaded: LoadedModel,
    text: str,
    target: str,
    method: str = "integrated_gradients",
    foil: str | None = None,
    prefix: str = "",
    steps: int = DEFAULT_STEPS,
) -> InputAttribution:
    """Scores of the input tokens for the prediction of `target` (against `foil`) after `text`."""
    if method not in METHODS and method != ROLLOUT:
        raise InputError(f"Unknown method {method!r}; known: {', '.join(METHODS)}, {ROLLOUT}.")
    model = loaded.model
    experiments.check_model(model)
    stack = "encoder" if getattr(model.config, "is_encoder_decoder", False) else None
    probe = experiments.prepare(loaded, text, prefix, stack=stack)
    want = experiments.target_token(loaded, probe, target)
    other = experiments.target_token(loaded, probe, foil, "foil") if foil else None
    ids = probe.inputs["input_ids"]
    f = _Objective.of_probe(loaded, probe, want.token_id, other.token_id if other else None)
    if method == ROLLOUT:
        return _rollout(loaded, probe, f, want, other)
    with loaded.lock, torch.enable_grad():
        scores, delta, value = _scores(loaded, ids, f, method, steps)
    return InputAttribution(method, probe.tokens, scores, delta, value, want, other)


def _scores(loaded, ids: torch.Tensor, f: _Objective, method: str, steps: int):
    """(scores (pos,), delta or None, f(E)) of one of Captum's METHODS for the embeddings of `ids` (1, pos).
    The caller holds the model's lock and enables gradients."""
    from captum.attr import InputXGradient, IntegratedGradients, Occlusion, Saliency  # 2 s to import

    model = loaded.model
    embed = model.get_input_embeddings()
    device = input_device(model)
    emb = embed(ids.to(device)).detach().requires_grad_()  # (1, pos, d_model)
    base = embed(torch.full_like(ids, _neutral(loaded.tokenizer, embed)).to(device)).detach()
    with torch.no_grad():  # f(E) and f(B) in one pass: the value, and the change IG must add up to
        both = f(torch.cat([emb, base])) if method == "integrated_gradients" else f(emb)
    value = float(both[0])
    delta = None
    if method == "integrated_gradients":
        attr = IntegratedGradients(f).attribute(emb, baselines=base, n_steps=steps, internal_batch_size=steps)
        scores = attr[0].detach().float().sum(-1)
        delta = float(scores.sum()) - (value - float(both[1]))  # Captum's convergence delta
    elif method == "saliency":
        scores = Saliency(f).attribute(emb, abs=False)[0].float().norm(dim=-1)
    elif method == "input_x_gradient":
        scores = InputXGradient(f).attribute(emb)[0].float().sum(-1)
    else:
        with torch.no_grad():
            attr = Occlusion(f).attribute(emb, sliding_window_shapes=(1, emb.shape[-1]), baselines=base)
        scores = attr[0, :, 0].float()  # every dimension of a token holds the token's own difference
    return scores.detach().cpu().numpy(), delta, value


@dataclass(frozen=True)
class PerToken:
    """Input attribution of every generated token: row i is the logit the model gave token `start + i`
    (as it was generated), attributed over `tokens` (a decoder's: every earlier token, NaN from the token
    itself on; an encoder-decoder's: the source)."""

    method: str
    tokens: tuple[str, ...]  # the columns
    generated: tuple[str, ...]  # the rows
    scores: np.ndarray  # (generated, columns)
    deltas: tuple[float | None, ...]
    values: tuple[float, ...]  # each row's f(E): the generated token's logit
    ids: tuple[int, ...] = ()  # the sequence attributed (prompt and generated)
    start: int = 0
    source_ids: tuple[int, ...] | None = None


def per_token(
    loaded: LoadedModel,
    ids: list[int],
    start: int,
    method: str = "input_x_gradient",
    source_ids: list[int] | None = None,
    steps: int = DEFAULT_STEPS,
    hooks: tuple[hooked.Hook, ...] = (),
    progress=None,
    before: PerToken | None = None,
) -> PerToken:
    """For each token ids[p], p >= start (what was generated after the prompt ids[:start]), its logit at
    the position before it attributed to the tokens it was computed from: ids[:p] for a decoder, the
    source for an encoder-decoder (whose decoder reads ids[:p]). `hooks` are attached to every pass (the
    steering the tokens were generated with); `progress(done, total)` is called after each token. The rows
    of `before` (the same method, prompt, source and hooks) are kept where its sequence agrees."""
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}; known: {', '.join(METHODS)}.")
    if not 0 < start < len(ids):
        raise InputError("There is no generated token to attribute yet: generate one first.")
    model, tok = loaded.model, loaded.tokenizer
    device = input_device(model)
    n = len(ids) - start
    width = len(source_ids) if source_ids is not None else len(ids) - 1
    scores = np.full((n, width), np.nan, dtype=np.float32)
    deltas: list[float | None] = [None] * n
    values = [0.0] * n
    first = start
    same = before is not None and (before.method, before.start, before.source_ids) == (
        method, start, None if source_ids is None else tuple(source_ids))  # fmt: skip
    if same:
        agree = next(
            (i for i, (a, b) in enumerate(zip(before.ids, ids)) if a != b), min(len(ids), len(before.ids))
        )
        first = max(start, agree)  # the row of ids[p] stands while ids[: p + 1] is the same
        kept = first - start
        scores[:kept, : min(width, before.scores.shape[1])] = before.scores[:kept, :width]
        deltas[:kept], values[:kept] = before.deltas[:kept], before.values[:kept]
    handles = []
    with loaded.lock, torch.enable_grad():
        try:
            handles = hooked.attach(hooks)
            for p in range(first, len(ids)):
                if source_ids is not None:
                    read = torch.tensor([source_ids])
                    f = _Objective(model, p - 1, ids[p], None, torch.tensor([ids[:p]], device=device))
                else:
                    read = torch.tensor([ids[:p]])
                    f = _Objective(model, p - 1, ids[p], None, None)
                row, deltas[p - start], values[p - start] = _scores(loaded, read, f, method, steps)
                scores[p - start, : len(row)] = row
                if progress is not None:
                    progress(p - first + 1, len(ids) - first)
        finally:
            for handle in handles:
                handle.remove()
    columns = source_ids if source_ids is not None else ids[:-1]
    return PerToken(
        method, tuple(display_tokens(tok, columns)), tuple(display_tokens(tok, ids[start:])), scores,
        tuple(deltas), tuple(values), tuple(ids), start, None if source_ids is None else tuple(source_ids),
    )  # fmt: skip


def _neutral(tokenizer, embed) -> int:
    """The token whose embedding stands for "no token" in the baselines: padding, else unknown, else the
    end or start of text, the first whose embedding is not near zero (a padding row is often all zeros,
    and a norm divides by the vector's size: the straight path from zero starts where it is undefined);
    else a token of median size."""
    weight = embed.weight.detach()
    sample = weight[:: max(1, weight.shape[0] // 4096)].float().norm(dim=-1)
    typical = float(sample.median())
    for tid in (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
    ):
        if tid is not None and tid < weight.shape[0] and float(weight[tid].float().norm()) >= 0.25 * typical:
            return int(tid)
    return int(torch.argmin((weight.float().norm(dim=-1) - typical).abs()))


def _rollout(loaded, probe, f, want, other) -> InputAttribution:
    """Attention rollout's row of the read position: how much of it flows from each input token."""
    if probe.read_stack != probe.stack:
        raise InputError(
            "Attention rollout follows one stack's self-attention: not an encoder-decoder's source."
        )
    options = hooked.options(loaded.model, last_logits_only=True)  # the maps only: no [pos, vocab] logits
    out = hooked.run(loaded, probe.inputs, output_attentions=True, **options)
    maps = torch.stack([m[0].float() for m in out.attentions]).cpu().numpy()  # [layer, head, q, k]
    with torch.no_grad():
        value = float(f(loaded.model.get_input_embeddings()(probe.inputs["input_ids"]).detach())[0])
    return InputAttribution(
        ROLLOUT, probe.tokens, rollout(maps)[-1][probe.position], None, value, want, other
    )
