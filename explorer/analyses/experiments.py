"""Experiments on a loaded model: knock out attention heads, patch activations from a clean run into a
corrupted one. Every intervention is a hook of one `hooked.run` (attached and removed inside the model's
turn), so the shared model is left exactly as loaded, also when a run fails.

What an experiment reads is a `Probe`: one forward pass's inputs and the position whose next-token
logits count (the last token of a decoder, the decoder's next token after a prefix for an
encoder-decoder, the first mask token of a masked language model). Heads are addressed as (layer, head)
in one stack; a head is knocked out at the input of the attention output projection (`Attention.o`),
where heads sit side by side in slices of d_head. The three kinds of activation patched are each block's
input (the residual stream), and what its attention and its feed-forward network add to the residual
(`Block.attn_out`, `Block.ffn_out`; with a parallel residual, both read the same input).

Many interventions run as rows of one batch: the input is repeated B times and each row's hook acts
differently (a per-row mask), which is how a scan of every head costs far less than one pass per head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models import anatomy, devices
from explorer.models.styles import text_config
from explorer.runs import hooked

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel

MAX_TOKENS = 256  # experiments run the text many times over
MAX_BATCH = 64
Progress = Callable[[int, int], None]  # (done, total)
Head = tuple[int, int]  # (layer, head)


class ExperimentError(InputError):
    """Input an experiment cannot run on (wrong kind of model, no target, prompts of different lengths)."""


@dataclass(frozen=True)
class Probe:
    """One text ready to run: `inputs` (batch 1), the stack acted on and its tokens, the read position."""

    inputs: dict[str, torch.Tensor]
    stack: str  # the stack whose heads and positions experiments act on
    ids: tuple[int, ...]  # that stack's input ids
    tokens: tuple[str, ...]
    read_stack: str  # the stack whose logits are read (the decoder of an encoder-decoder)
    position: int  # the position whose next-token logits are read
    read_tokens: tuple[str, ...]  # the tokens of read_stack
    context: str | None  # the text the read token continues (None: a masked LM's mask)


@dataclass(frozen=True)
class Target:
    token_id: int
    token: str
    note: str  # why this token, when the typed target was several tokens ("" otherwise)


def check_model(model: Any) -> None:
    """ExperimentError unless the anatomy of the model is known and it has next-token logits to read."""
    try:
        found = anatomy.of(model)
    except anatomy.UnsupportedModel as err:
        kind = getattr(model.config, "model_type", "?")
        raise ExperimentError(
            f"{type(model).__name__} (model type {kind!r}) is not one of the families these experiments "
            f"take apart: {err}"
        ) from err
    if found.unembed is None:
        raise ExperimentError(
            f"{type(model).__name__} has no language-model head: it gives vectors, not next-token "
            "probabilities, so there is no prediction for an experiment to change. Load a decoder (SmolLM2, "
            "Gemma 3, GPT-2), an encoder-decoder (T5, BART), or an encoder with its masked-LM head."
        )


def stacks(model: Any) -> tuple[str, ...]:
    """('encoder',), ('decoder',) or ('encoder', 'decoder')."""
    return anatomy.of(model).stack_names


def n_layers(model: Any, stack: str) -> int:
    return anatomy.of(model).n_layers(stack)


def n_heads(model: Any, stack: str) -> int:
    """Query heads per layer of `stack`; ExperimentError when layers differ (a scan is a grid)."""
    found = {b.attn.n_heads for b in anatomy.of(model).blocks(stack)}
    if len(found) != 1:
        raise ExperimentError(
            f"The layers of this model's {stack} have different numbers of heads ({sorted(found)}): head "
            "experiments address a grid of layers x heads."
        )
    return found.pop()


def prepare(
    loaded: LoadedModel, text: str, prefix: str = "", stack: str | None = None, limit: int = MAX_TOKENS
) -> Probe:
    """The probe for `text`. Encoder-decoders: `text` is the source and `prefix` the decoder's start
    (its next token is read); `stack` picks whose heads/positions are acted on (default: the encoder's,
    where the source's words are). Masked LMs: the first mask token is read."""
    model, tok = loaded.model, loaded.tokenizer
    check_model(model)
    ids = hooked.encode(model, tok, text, limit)
    both = stacks(model)
    stack = stack or both[0]
    if stack not in both:
        raise ExperimentError(f"{type(model).__name__} has no {stack} stack (it has: {', '.join(both)}).")
    dec = None
    if len(both) == 2:
        dec = hooked.decoder_prefix(model, tok, prefix)
        read_ids, read_stack, position = dec, "decoder", len(dec) - 1
    elif both == ("encoder",):
        mask = tok.mask_token_id
        if mask is None or mask not in ids:
            where = f"the mask token {tok.mask_token}" if tok.mask_token else "a mask token"
            raise ExperimentError(
                f"{type(model).__name__} is a masked language model: put {where} in the text where it "
                "should predict a word, e.g. 'The capital of France is "
                f"{tok.mask_token or '[MASK]'}.' (it has no next token)."
            )
        read_ids, read_stack, position = ids, "encoder", ids.index(mask)
    else:
        read_ids, read_stack, position = ids, "decoder", len(ids) - 1
    stack_ids = ids if stack == both[0] else read_ids
    return Probe(
        inputs=hooked.inputs(model, ids, dec),
        stack=stack,
        ids=tuple(stack_ids),
        tokens=tuple(display_tokens(tok, list(stack_ids))),
        read_stack=read_stack,
        position=position,
        read_tokens=tuple(display_tokens(tok, list(read_ids))),
        context=None if read_stack == "encoder" else (prefix if len(both) == 2 else text),
    )


def target_token(loaded: LoadedModel, probe: Probe, target: str, what: str = "target") -> Target:
    """The token id of `target` as the continuation of the probe's text: the tokens of text + target
    after the text's own (so ' Paris' after 'is' is the token the model would write), else the target
    alone. A target of several tokens uses its first one and says so; an unknown one is refused."""
    tok = loaded.tokenizer
    if not target or not target.strip():
        raise ExperimentError(f"The {what} is empty: type the token the model should predict, e.g. ' Paris'.")
    ids = tok(target, add_special_tokens=False)["input_ids"]
    if probe.context:
        before = tok(probe.context, add_special_tokens=False)["input_ids"]
        after = tok(probe.context + target, add_special_tokens=False)["input_ids"]
        if len(after) > len(before) and after[: len(before)] == before:
            ids = after[len(before) :]
    if not ids:
        raise ExperimentError(f"The {what} {target!r} gives no token with this tokenizer.")
    unk = tok.unk_token_id
    if unk is not None and ids[0] == unk and target.strip() != tok.unk_token:
        raise ExperimentError(
            f"The {what} {target!r} is not in this model's vocabulary (it reads as unknown)."
        )
    shown = display_tokens(tok, ids)
    note = ""
    if len(ids) > 1:
        note = (
            f"The {what} {target!r} is {len(ids)} tokens ({' · '.join(shown)}); its first token "
            f"{shown[0]!r} is used."
        )
    return Target(int(ids[0]), shown[0], note)


# -- running rows of a batch ---------------------------------------------------------------------------


def _repeat(inputs: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    return {k: v.expand(rows, *v.shape[1:]) for k, v in inputs.items()}


def batch_size(model: Any, probe: Probe, free_bytes: int | None = None) -> int:
    """Rows per batch: what one row's activations need (eager attention maps included), within a
    quarter of the free memory and at most MAX_BATCH."""
    cfg = text_config(model)
    d_model = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd)
    n = sum(int(v.shape[1]) for k, v in probe.inputs.items() if k != "attention_mask")
    heads = n_heads(model, probe.stack)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    per_row = 4 * (n * (24 * d_model + 4 * heads * n) + 2 * vocab * len(probe.read_tokens))
    if free_bytes is None:
        free_bytes = devices.available_bytes(str(anatomy.input_device(model)))
    return int(max(1, min(MAX_BATCH, free_bytes // 4 // max(per_row, 1))))


def _call(model: Any, stack: str, layer: int) -> int | None:
    """Which call of a block's modules is `layer`'s: a block shared by every layer (ALBERT) is called
    once per layer; any other block once."""
    return layer if anatomy.of(model).stacks[stack].shared_blocks else None


def _logits(loaded: LoadedModel, probe: Probe, hooks: list[hooked.Hook], rows: int = 1) -> torch.Tensor:
    """One hooked run of `rows` copies of the probe; the read position's logits (rows, vocab), float32
    on the CPU. ExperimentError when a hooked module was never called (a model that computes that part
    another way would otherwise give the unhooked numbers as if they were the experiment's)."""
    model = loaded.model
    fired: set[int] = set()

    def noted(i: int, fn: hooked.Fn) -> hooked.Fn:
        def fn_noted(x: torch.Tensor) -> torch.Tensor | None:
            fired.add(i)
            return fn(x)

        return fn_noted

    last = probe.position == len(probe.read_tokens) - 1
    options = hooked.options(model, last_logits_only=last)
    watched = [replace(h, fn=noted(i, h.fn)) for i, h in enumerate(hooks)]
    out = hooked.run(loaded, _repeat(probe.inputs, rows), watched, **options)
    missed = [h for i, h in enumerate(hooks) if i not in fired]
    if missed:
        raise ExperimentError(
            f"{type(model).__name__} never called its {type(missed[0].module).__name__} during the run, so "
            "the experiment could not act there (this model computes that part another way)."
        )
    position = -1 if "logits_to_keep" in options else probe.position
    return out.logits[:, position].float().cpu()


def clean_logits(loaded: LoadedModel, probe: Probe) -> torch.Tensor:
    """The read position's logits of an unhooked pass (vocab,)."""
    return _logits(loaded, probe, [])[0]


# -- head ablation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """The next-token distribution before and after knocking out `heads`."""

    heads: tuple[Head, ...]
    mode: str  # zero | mean
    before: np.ndarray  # log-probabilities (vocab,)
    after: np.ndarray  # (vocab,)
    kl: float  # KL(before || after), nats
    target: Target | None
    delta_logprob: float | None  # after - before of the target token


@dataclass(frozen=True)
class Scan:
    """Every head of a stack knocked out on its own."""

    mode: str
    stack: str
    target: Target
    base_logprob: float  # the target's log-probability with every head on
    delta_logprob: np.ndarray  # [layer, head]
    kl: np.ndarray  # [layer, head]

    @property
    def nbytes(self) -> int:
        return self.delta_logprob.nbytes + self.kl.nbytes


def head_means(loaded: LoadedModel, probe: Probe) -> dict[int, torch.Tensor]:
    """Per layer: each head's mean output over the text's positions (head, d_head), from a clean pass."""
    model = loaded.model
    found = anatomy.of(model).blocks(probe.stack)
    seen: dict[int, torch.Tensor] = {}
    hooks = [hooked.keep(seen, b.index, b.attn.o, "pre", _call(model, probe.stack, b.index)) for b in found]
    _logits(loaded, probe, hooks)
    means = {}
    for b in found:
        x = seen[b.index]  # (pos, head * d_head)
        means[b.index] = x.reshape(x.shape[0], b.attn.n_heads, b.attn.d_head).mean(0)
    return means


def _knockout(attn: anatomy.Attention, keep: torch.Tensor, fill: torch.Tensor | None) -> hooked.Fn:
    """On the output projection's input (row, pos, head * d_head): row r keeps head h where keep[r, h] is 1,
    else puts `fill` (head, d_head) there (None: zeros). Where keep is 1 the values are unchanged bit for
    bit (x * 1 + 0)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        x4 = x.reshape(b, n, attn.n_heads, attn.d_head)  # (row, pos, head, d_head)
        k = keep.to(x.device, x.dtype)[:, None, :, None]
        out = x4 * k
        if fill is not None:
            out = out + (1 - k) * fill.to(x.device, x.dtype)[None, None]
        return out.reshape(b, n, width)

    return fn


def ablated_logits(
    loaded: LoadedModel, probe: Probe, rows: Sequence[Iterable[Head]], mode: str = "zero",
    means: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """One batch: row r runs with the heads rows[r] knocked out. Returns logits (rows, vocab)."""
    if mode not in ("zero", "mean"):
        raise ExperimentError(f"Unknown ablation {mode!r}: use 'zero' or 'mean'.")
    model, stack = loaded.model, probe.stack
    found = anatomy.of(model).blocks(stack)
    rows = [set(r) for r in rows]
    if mode == "mean" and means is None:
        means = head_means(loaded, probe)
    hooks = []
    for layer in sorted({lh[0] for r in rows for lh in r}):
        if not 0 <= layer < len(found):
            raise ExperimentError(f"There is no layer {layer}: the {stack} has layers 0-{len(found) - 1}.")
        attn = found[layer].attn
        keep = torch.ones(len(rows), attn.n_heads)
        for i, r in enumerate(rows):
            for lay, h in r:
                if lay == layer:
                    if not 0 <= h < attn.n_heads:
                        raise ExperimentError(
                            f"There is no head {h}: each layer has heads 0-{attn.n_heads - 1}."
                        )
                    keep[i, h] = 0.0
        fill = means[layer] if mode == "mean" else None
        hooks.append(
            hooked.Hook(attn.o, "pre", _knockout(attn, keep, fill), _call(model, probe.stack, layer))
        )
    return _logits(loaded, probe, hooks, len(rows))


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, nats; logp (vocab,), logq (rows, vocab)."""
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


def ablate(
    loaded: LoadedModel, probe: Probe, heads: Sequence[Head], mode: str = "zero", target: Target | None = None
) -> Ablation:
    """Knocks out `heads` together; the distribution before and after."""
    before = torch.log_softmax(clean_logits(loaded, probe), -1)
    # no head: nothing to run again (that a row without heads is the clean run is tested)
    after = torch.log_softmax(ablated_logits(loaded, probe, [heads], mode)[0], -1) if heads else before
    delta = None if target is None else float(after[target.token_id] - before[target.token_id])
    return Ablation(
        tuple(heads), mode, before.numpy(), after.numpy(), float(_kl(before, after[None])[0]), target, delta
    )


def scan_heads(
    loaded: LoadedModel, probe: Probe, target: Target, mode: str = "zero", progress: Progress | None = None,
    rows_per_batch: int | None = None,
) -> Scan:  # fmt: skip
    """Knocks out each head of the probe's stack in turn, B heads per batch (one per row); the lock is
    taken per batch so other sessions' runs interleave."""
    model, stack = loaded.model, probe.stack
    layers, heads = n_layers(model, stack), n_heads(model, stack)
    before = torch.log_softmax(clean_logits(loaded, probe), -1)
    means = head_means(loaded, probe) if mode == "mean" else None
    todo = [(layer, h) for layer in range(layers) for h in range(heads)]
    size = rows_per_batch or batch_size(model, probe)
    delta = np.zeros(len(todo), dtype=np.float32)
    kl = np.zeros(len(todo), dtype=np.float32)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        after = torch.log_softmax(ablated_logits(loaded, probe, [[lh] for lh in chunk], mode, means), -1)
        delta[start : start + len(chunk)] = (after[:, target.token_id] - before[target.token_id]).numpy()
        kl[start : start + len(chunk)] = _kl(before, after).numpy()
        if progress is not None:
            progress(start + len(chunk), len(todo))
        loaded.lock.yield_turn()  # a page holding the model for the scan lets waiting sessions go first
    shape = (layers, heads)
    return Scan(mode, stack, target, float(before[target.token_id]), delta.reshape(shape), kl.reshape(shape))


def parse_heads(spec: str) -> list[Head]:
    """'3.1,5.0' -> [(3, 1), (5, 0)]; ExperimentError on anything else."""
    found = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        layer, dot, head = part.partition(".")
        if not dot or not layer.strip().isdigit() or not head.strip().isdigit():
            raise ExperimentError(f"{part!r} is not a head: write LAYER.HEAD, e.g. 3.1,5.0.")
        found.append((int(layer), int(head)))
    return found


def top_tokens(loaded: LoadedModel, logprobs: np.ndarray, k: int) -> list[tuple[int, str, float]]:
    """The k most likely tokens: (id, readable token, probability)."""
    order = np.argsort(-logprobs)[:k]
    shown = display_tokens(loaded.tokenizer, [int(i) for i in order])
    return [(int(i), s, float(np.exp(logprobs[i]))) for i, s in zip(order, shown)]


# -- activation patching -------------------------------------------------------------------------------

KINDS = ("resid", "attn", "mlp")
KIND_TITLES = {
    "resid": "residual stream (block input)",
    "attn": "attention output",
    "mlp": "feed-forward output",
}


@dataclass(frozen=True)
class Patching:
    """Share of the logit difference restored per (layer, position), per kind of activation."""

    tokens: tuple[str, ...]  # the corrupted prompt's tokens (the positions patched)
    clean_tokens: tuple[str, ...]
    target: Target
    foil: Target
    ld_clean: float  # logit(target) - logit(foil) on the clean prompt
    ld_corrupt: float
    restored: dict[str, np.ndarray]  # kind -> [layer, pos]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.restored.values())


def _hook_point(model: Any, stack: str, kind: str, layer: int) -> tuple[Any, str]:
    """The module and side where `kind` of `layer` is read or replaced: the block's input (its residual
    stream), or the output of what attention or the FFN adds to the residual."""
    block = anatomy.of(model).blocks(stack)[layer]
    if kind == "resid":
        return block.module, "pre"
    if kind not in KINDS:
        raise ExperimentError(f"Unknown activation {kind!r}: use one of {', '.join(KINDS)}.")
    return (block.attn_out if kind == "attn" else block.ffn_out), "post"


def cache_activations(
    loaded: LoadedModel, probe: Probe, kinds: Sequence[str] = KINDS
) -> dict[str, list[torch.Tensor]]:
    """One clean pass: per kind, per layer, the activation (pos, d_model) of the probe's stack."""
    model = loaded.model
    layers = n_layers(model, probe.stack)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    hooks = [
        hooked.keep(
            seen, (kind, i), *_hook_point(model, probe.stack, kind, i), call=_call(model, probe.stack, i)
        )
        for kind in kinds
        for i in range(layers)
    ]
    _logits(loaded, probe, hooks)
    return {kind: [seen[(kind, i)] for i in range(layers)] for kind in kinds}


def _put(rows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> hooked.Fn:
    """Puts values (n, d_model) at (rows[i], positions[i]) of the activation (row, pos, d_model)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[rows.to(x.device), positions.to(x.device)] = values.to(x.device, x.dtype)
        return x

    return fn


def patched_logits(
    loaded: LoadedModel, probe: Probe, cache: dict[str, list[torch.Tensor]], kind: str,
    rows: Sequence[tuple[int, Sequence[int]]],
) -> torch.Tensor:  # fmt: skip
    """One batch on the corrupted probe: row r gets the clean activation of `kind` at layer rows[r][0],
    positions rows[r][1]. Returns logits (rows, vocab)."""
    model = loaded.model
    hooks = []
    for layer in sorted({r[0] for r in rows}):
        idx = [(i, p) for i, (lay, ps) in enumerate(rows) if lay == layer for p in ps]
        r = torch.tensor([i for i, _ in idx], dtype=torch.long)
        p = torch.tensor([q for _, q in idx], dtype=torch.long)
        module, when = _hook_point(model, probe.stack, kind, layer)
        values = cache[kind][layer][p.to(cache[kind][layer].device)]
        hooks.append(hooked.Hook(module, when, _put(r, p, values), _call(model, probe.stack, layer)))
    return _logits(loaded, probe, hooks, len(rows))


def _ld(logits: torch.Tensor, target: Target, foil: Target) -> torch.Tensor:
    return logits[..., target.token_id] - logits[..., foil.token_id]


def patch_probes(
    loaded: LoadedModel, clean: str, corrupt: str, prefix: str = "", stack: str | None = None
) -> tuple[Probe, Probe]:
    """The two probes, checked to have the same number of tokens in the patched stack."""
    a = prepare(loaded, clean, prefix, stack)
    b = prepare(loaded, corrupt, prefix, stack)
    if len(a.ids) != len(b.ids):
        raise ExperimentError(
            f"The clean prompt is {len(a.ids)} tokens ({' · '.join(a.tokens)}) and the corrupted one "
            f"{len(b.ids)} ({' · '.join(b.tokens)}). Patching copies activations position by position, so "
            "both need the same number of tokens: change a word so that they match."
        )
    return a, b


def patch(
    loaded: LoadedModel, clean: str, corrupt: str, target: str, foil: str, kinds: Sequence[str] = KINDS,
    progress: Progress | None = None, prefix: str = "", stack: str | None = None,
    rows_per_batch: int | None = None,
) -> Patching:  # fmt: skip
    """Causal tracing: for each kind, layer and position, the share of the clean-vs-corrupt logit
    difference restored by copying the clean activation into the corrupted run:
    (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt), LD = logit(target) - logit(foil)."""
    a, b = patch_probes(loaded, clean, corrupt, prefix, stack)
    t = target_token(loaded, a, target)
    f = target_token(loaded, a, foil, "foil")
    if t.token_id == f.token_id:
        raise ExperimentError(
            f"The target and the foil are the same token ({t.token!r}): pick two different ones."
        )
    ld_clean = float(_ld(clean_logits(loaded, a), t, f))
    ld_corrupt = float(_ld(clean_logits(loaded, b), t, f))
    if abs(ld_clean - ld_corrupt) < 1e-6:
        raise ExperimentError(
            "Both prompts give the same logit difference between the target and the foil: there is "
            "nothing to restore. Pick prompts on which the model prefers different answers."
        )
    cache = cache_activations(loaded, a, kinds)
    model = loaded.model
    layers, n_pos = n_layers(model, a.stack), len(a.ids)
    size = rows_per_batch or batch_size(model, b)
    todo = [(kind, layer, pos) for kind in kinds for layer in range(layers) for pos in range(n_pos)]
    restored = {kind: np.zeros((layers, n_pos), dtype=np.float32) for kind in kinds}
    done = 0
    for kind in kinds:
        cells = [(layer, pos) for layer in range(layers) for pos in range(n_pos)]
        for start in range(0, len(cells), size):
            chunk = cells[start : start + size]
            logits = patched_logits(loaded, b, cache, kind, [(lay, [p]) for lay, p in chunk])
            share = (_ld(logits, t, f) - ld_corrupt) / (ld_clean - ld_corrupt)
            for (lay, p), s in zip(chunk, share.tolist()):
                restored[kind][lay, p] = s
            done += len(chunk)
            if progress is not None:
                progress(done, len(todo))
            loaded.lock.yield_turn()  # between batches: sessions waiting for the model go first
    return Patching(b.tokens, a.tokens, t, f, ld_clean, ld_corrupt, restored)
