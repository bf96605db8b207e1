"""One hooked run: every analysis that reads or changes what happens inside the model goes through `run`.

`run` takes the model's turn (its lock), attaches the given hooks to parts of the anatomy, runs the
model once (under `no_grad` unless gradients are asked for), and removes every hook in `finally`, so
that a shared model is left exactly as loaded, also when a hook raises.

A hook sees one tensor and may return a replacement: for `pre`, the module's input (its first
positional argument, or `hidden_states` when passed by keyword); for `post`, its output (the first
element when it returns a tuple). A module reused by several layers (ALBERT) is called once per layer:
`call` picks the call a hook acts on (None: every call).

The inputs of a forward pass are built here too, once for every analysis: `encode` (with the length
checks), and for encoder-decoders the decoder's input (`shifted` for teacher forcing, `decoder_prefix` for
a typed prefix, `greedy_decoder_ids` for the model's own output), then `inputs`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch

from explorer.errors import InputError
from explorer.models.anatomy import input_device

if TYPE_CHECKING:  # the loaded model's type, for annotations only
    from explorer.models.loading import LoadedModel

Fn = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Hook:
    module: Any
    when: str  # pre | post
    fn: Fn  # the tensor in, a replacement (or None: unchanged) out
    call: int | None = None  # which call of a module reused by several layers (None: every call)
    whole: bool = False  # post only: fn reads the whole output (every element of a tuple); no replacement
    widen: tuple[int, int] | None = None  # pre only: (rows, times), see `branch`


def _pre(hooks: list[Hook], calls: dict[int, int]):
    def hook(module, args, kwargs):
        n = calls[id(module)]
        x = args[0] if args else kwargs.get("hidden_states")
        changed = False
        for h in hooks:
            if h.call is not None and h.call != n:
                continue
            if (y := h.fn(x)) is not None:
                x, changed = y, True
        wide = next((h.widen for h in hooks if h.widen is not None), None)
        if wide is not None and wide[1] > 1 and x.shape[0] == wide[0] * wide[1]:
            args = (x, *(_tiled(a, *wide) for a in args[1:])) if args else args
            kwargs = {k: _tiled(v, *wide) for k, v in kwargs.items()}
            changed = True
        if not changed:
            return None
        if args:
            return (x,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    return hook


def _tiled(value: Any, rows: int, times: int) -> Any:
    """`value` (a module's other input: a mask, positions, a pair of rotary tables) with each tensor of
    `rows` batch rows repeated `times` times, in the order the stream's branches are stacked. Tensors of one
    dimension (a cache position) have no batch rows."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 2 and value.shape[0] == rows:
            return value.repeat(times, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_tiled(v, rows, times) for v in value)
    if isinstance(value, dict):
        return {k: _tiled(v, rows, times) for k, v in value.items()}
    return value


def _post(hooks: list[Hook], calls: dict[int, int]):
    def hook(module, args, output):
        n = calls[id(module)]
        calls[id(module)] = n + 1
        y = output[0] if isinstance(output, tuple) else output
        changed = False
        for h in hooks:
            if h.call is not None and h.call != n:
                continue
            if h.whole:  # reads every element of the output; replaces nothing
                h.fn(output)
            elif (z := h.fn(y)) is not None:
                y, changed = z, True
        if not changed:
            return None
        return (y,) + tuple(output[1:]) if isinstance(output, tuple) else y

    return hook


def attach(hooks: Iterable[Hook]) -> list[Any]:
    """Registers `hooks` (grouped per module, so that a module's calls are counted once); returns the
    handles to remove. Prefer `run`, which removes them."""
    by_module: dict[int, tuple[Any, list[Hook], list[Hook]]] = {}
    for h in hooks:
        if h.when not in ("pre", "post"):
            raise ValueError(f"a hook is 'pre' or 'post', not {h.when!r}")
        entry = by_module.setdefault(id(h.module), (h.module, [], []))
        entry[1 if h.when == "pre" else 2].append(h)
    calls = {key: 0 for key in by_module}
    handles = []
    try:
        for module, pre, post in by_module.values():
            if pre:
                handles.append(module.register_forward_pre_hook(_pre(pre, calls), with_kwargs=True))
            # the post hook also counts the calls, so every hooked module gets one
            handles.append(module.register_forward_hook(_post(post, calls)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles


def run(
    loaded: LoadedModel,
    inputs: dict[str, torch.Tensor],
    hooks: Iterable[Hook] = (),
    grad: bool = False,
    **options,
):
    """One forward pass of `loaded.model` on `inputs` with `hooks` attached for this pass only, holding
    the model's turn. Returns the model's output."""
    model = loaded.model
    with loaded.lock:
        handles = attach(hooks)
        try:
            with torch.set_grad_enabled(grad):
                return model(**inputs, **options)
        finally:
            for handle in handles:
                handle.remove()


def branch(
    module: Any, later: Iterable[Any], fn: Fn, rows: int, times: int, call: int | None = None
) -> list[Hook]:
    """Hooks for one pass that shares what comes before `module`: `fn` turns its input stream of `rows` rows
    into `times` versions stacked ((rows * times, ...)), and `module` and the `later` modules (the blocks
    after it) get their other inputs (masks, positions, an encoder's output) tiled to match. The output
    has rows * times rows, the versions in `fn`'s order: `times` passes' worth of work after `module`, one
    before it. `module` is in the stack that makes the output (an encoder-decoder's decoder)."""
    nothing: Fn = lambda x: None  # noqa: E731
    return [Hook(module, "pre", fn, call, widen=(rows, times))] + [
        Hook(m, "pre", nothing, None, widen=(rows, times)) for m in later
    ]


def keep(
    store: dict, key: Any, module: Any, when: str, call: int | None = None, batch_row: int | None = 0
) -> Hook:
    """A hook that keeps a detached copy of what it sees under store[key] (row `batch_row` of the batch,
    or the whole batch for None)."""

    def fn(x: torch.Tensor) -> None:
        # a copy: some models add to a sub-layer's output in place afterwards (Falcon's mlp_output +=)
        store[key] = (x if batch_row is None else x[batch_row]).detach().clone()

    return Hook(module, when, fn, call)


# -- inputs ---------------------------------------------------------------------------------------------


def context_limit(model: Any) -> int | None:
    """The most positions the model reads (learned position tables, rotary's trained length); None when
    it has no fixed limit (T5's relative buckets)."""
    config = model.config
    if getattr(config, "model_type", None) in ("t5", "mt5", "umt5"):
        return None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode(model: Any, tokenizer: Any, text: str, limit: int | None = None) -> list[int]:
    """Token ids of `text` with the tokenizer's special tokens; InputError for empty or too long text.
    `limit` lowers the model's own context limit (a page drawing every position)."""
    if not text or not text.strip():
        raise InputError("The text is empty: type a sentence to run through the model.")
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    most = context_limit(model)
    if most is not None and len(ids) > most:
        raise InputError(
            f"The text is {len(ids):,} tokens long and this model reads at most {most:,} (its context "
            "length). Shorten the text."
        )
    if limit is not None and len(ids) > limit:
        raise InputError(
            f"The text is {len(ids):,} tokens long; this page shows at most {limit:,}. Shorten it."
        )
    return ids


def decoder_start(model: Any) -> int:
    """The token an encoder-decoder's decoder starts from; InputError when its config has none."""
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise InputError(
            "This encoder-decoder's config has no decoder_start_token_id, so it has no decoder input."
        )
    return int(start)


def shifted(model: Any, ids: list[int]) -> list[int]:
    """Teacher forcing: the decoder reads `ids` shifted right behind its start token."""
    return [decoder_start(model)] + list(ids[:-1])


def decoder_prefix(model: Any, tokenizer: Any, target: str | None) -> list[int]:
    """An encoder-decoder's decoder input for a typed target prefix: its start token, then the target's
    tokens as the tokenizer makes training labels (BART's begin with <s>), without the closing end token
    (a prefix to continue, not a finished output)."""
    ids = [decoder_start(model)]
    if target and target.strip():
        labels = tokenizer(text_target=target)["input_ids"]
        if labels and labels[-1] == tokenizer.eos_token_id:
            labels = labels[:-1]
        ids += labels
    return ids


def greedy_decoder_ids(loaded: LoadedModel, source_ids: list[int], most: int) -> list[int]:
    """The decoder input an encoder-decoder writes itself for `source_ids`: its greedy output, at most
    `most` new tokens, behind its start token."""
    model = loaded.model
    src = inputs(model, source_ids, [decoder_start(model)])
    config = model.config
    # transformers 5.24 sizes T5's generation cache by the encoder's layer count: a decoder of another
    # depth fails on an index error, so such models generate without the cache.
    cache_ok = getattr(config, "num_decoder_layers", None) in (None, getattr(config, "num_layers", None))
    with loaded.lock, torch.no_grad():
        out = model.generate(
            input_ids=src["input_ids"], attention_mask=src["attention_mask"], max_new_tokens=most,
            do_sample=False, num_beams=1, use_cache=cache_ok,
        )  # fmt: skip
    return [int(i) for i in out[0].tolist()]


def inputs(model: Any, ids: list[int], decoder_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Keyword arguments for one forward pass of `ids` (batch 1), with the decoder's input for
    encoder-decoders (default: `shifted(ids)`)."""
    device = input_device(model)
    x = torch.tensor([ids], device=device)
    found = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    if getattr(model.config, "is_encoder_decoder", False):
        dec = shifted(model, ids) if decoder_ids is None else decoder_ids
        found["decoder_input_ids"] = torch.tensor([dec], device=device)
    return found


def options(model: Any, last_logits_only: bool = False) -> dict[str, Any]:
    """Forward options: no KV cache; only the last position's logits when that is all that is read (the
    LM head over every position costs much on a large vocabulary, Gemma's 262k words)."""
    names = inspect.signature(model.forward).parameters
    found: dict[str, Any] = {}
    if "use_cache" in names:
        found["use_cache"] = False
    if last_logits_only and "logits_to_keep" in names:
        found["logits_to_keep"] = 1
    return found
