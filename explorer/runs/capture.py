"""One forward pass, kept: tokens, every attention map and every hidden state, as a frozen value.

`capture(loaded, text)` runs an encoder or a decoder on `text`; `capture(loaded, source, target=...)`
runs an encoder-decoder on a source text and a target prefix (or, with no target, on the model's own
greedy output). The result holds numpy arrays on the CPU and no reference to the model, so a page can
keep it while the shared model serves other users.

Shapes, with the dimension names used across the project:
    attentions       [layer, head, q, k]      float32, one map per query head (grouped-query models too)
    hidden_states    [layer+1, pos, d_model]  float32, the embeddings then each block's output
    cross_attentions [layer, head, tgt, src]
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens, special_flags
from explorer.errors import InputError
from explorer.models import devices
from explorer.models.anatomy import input_device
from explorer.runs import hooked

GENERATE_MAX_TOKENS = 48  # an encoder-decoder with no target prefix continues its own output this far
MEMORY_SHARE = 0.5  # a capture may take at most this share of the free memory


@dataclass(frozen=True)
class Sequence:
    """One token sequence as the model saw it."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]  # readable text of each piece (see explorer.analyses.tokens)
    special: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class AttentionSet:
    """Attention maps of one kind (self, encoder self, decoder self or cross) with their tokens."""

    name: str  # self | encoder | decoder | cross
    title: str
    maps: np.ndarray  # [layer, head, q, k]
    queries: Sequence
    keys: Sequence
    causal: bool
    windows: tuple[int | None, ...]  # per layer: the sliding window, or None for full attention

    @property
    def n_layers(self) -> int:
        return self.maps.shape[0]

    @property
    def n_heads(self) -> int:
        return self.maps.shape[1]

    @property
    def same_sequence(self) -> bool:
        """Self-attention: queries and keys are the same positions (distance, previous, self apply)."""
        return self.name != "cross"


@dataclass(frozen=True)
class Capture:
    model_name: str
    family: str  # encoder | decoder | encoder-decoder
    sequence: Sequence  # the text (encoders, decoders) or the decoder's input (encoder-decoders)
    attentions: np.ndarray  # [layer, head, q, k]: self-attention (decoder self for encoder-decoders)
    hidden_states: np.ndarray  # [layer+1, pos, d_model]
    windows: tuple[int | None, ...]  # per layer of `attentions`
    next_token_logits: np.ndarray | None = None  # [vocab], at the last position (models with an LM head)
    next_token: str | None = None  # the most likely next token, as text (models with an LM head)
    source: Sequence | None = None  # encoder-decoders: the encoder's input
    encoder_attentions: np.ndarray | None = None  # [layer, head, src, src]
    encoder_hidden_states: np.ndarray | None = None  # [layer+1, src, d_model]
    cross_attentions: np.ndarray | None = None  # [layer, head, tgt, src]
    target_generated: bool = False  # the decoder input is the model's own greedy output
    meta: dict[str, Any] = field(default_factory=dict)

    def attention_sets(self) -> list[AttentionSet]:
        """Every kind of attention in this capture, in the order a page offers them."""
        if self.family != "encoder-decoder":
            title = "Self-attention" if self.family == "encoder" else "Causal self-attention"
            causal = self.family == "decoder"
            return [
                AttentionSet(
                    "self", title, self.attentions, self.sequence, self.sequence, causal, self.windows
                )
            ]
        src, tgt = self.source, self.sequence
        n_enc, n_dec = self.encoder_attentions.shape[0], self.attentions.shape[0]
        # A cross-attention row is read while writing the next token: each row is named by what it writes
        # (`<pad> → 2`), so that a reader does not read the map one row off.
        if self.next_token is not None:
            writes = (*tgt.tokens[1:], self.next_token)
            tgt_rows = Sequence(tgt.ids, tuple(f"{t} → {w}" for t, w in zip(tgt.tokens, writes)), tgt.special)
        else:
            tgt_rows = tgt
        return [
            AttentionSet("encoder", "Encoder self-attention", self.encoder_attentions, src, src, False,
                         (None,) * n_enc),
            AttentionSet("decoder", "Decoder self-attention", self.attentions, tgt, tgt, True, self.windows),
            AttentionSet("cross", "Cross-attention (decoder → encoder)", self.cross_attentions, tgt_rows,
                         src, False, (None,) * n_dec),
        ]  # fmt: skip

    def attention_set(self, name: str) -> AttentionSet:
        for s in self.attention_sets():
            if s.name == name:
                return s
        raise KeyError(f"No {name!r} attention in a {self.family} capture")

    @property
    def nbytes(self) -> int:
        arrays = [self.attentions, self.hidden_states, self.next_token_logits, self.encoder_attentions,
                  self.encoder_hidden_states, self.cross_attentions]  # fmt: skip
        return sum(a.nbytes for a in arrays if a is not None)


def layer_windows(config, n_layers: int) -> tuple[int | None, ...]:
    """The sliding window of each layer (None: the layer sees every earlier position)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not window:
        return (None,) * n_layers
    if types and len(types) == n_layers:
        return tuple(window if t == "sliding_attention" else None for t in types)
    if getattr(config, "use_sliding_window", True) is False:
        return (None,) * n_layers
    return (window,) * n_layers


def capture(
    loaded,
    text: str,
    target: str | None = None,
    max_tokens: int | None = None,
    free_bytes: int | None = None,
    max_bytes: int | None = None,
) -> Capture:
    """Runs `loaded` (an explorer.models.loading.LoadedModel) on `text` and keeps what it computed.

    For encoder-decoders `text` is the source and `target` the decoder's prefix; with no target the
    decoder input is the model's greedy output for the source. Raises InputError for empty text, text
    over the model's context (or `max_tokens`) and a capture that would not fit in memory: more than half
    the free memory (`free_bytes`, default: measured) or more than `max_bytes` (a server's bound).
    """
    if not text or not text.strip():
        raise InputError("The text is empty: type a sentence to look inside the model.")
    model, tokenizer, card = loaded.model, loaded.tokenizer, loaded.card
    limit = (
        min(x for x in (card.context_length, max_tokens) if x)
        if (card.context_length or max_tokens)
        else None
    )
    device = input_device(model)
    with loaded.lock, torch.inference_mode():
        if card.family == "encoder-decoder":
            return _capture_seq2seq(loaded, text, target, limit, device, free_bytes, max_bytes)
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        _check_length(ids.shape[1], limit, "text")
        _check_memory(card, ids.shape[1], ids.shape[1], free_bytes, max_bytes)
        kwargs = dict(output_attentions=True, output_hidden_states=True)
        if card.family == "decoder":
            kwargs["use_cache"] = False
            if "logits_to_keep" in inspect.signature(model.forward).parameters:
                kwargs["logits_to_keep"] = 1  # the full [pos, vocab] logits are large (Gemma: 262k words)
        out = hooked.run(loaded, {"input_ids": ids.to(device)}, **kwargs)
        attentions = _stack(out.attentions, "attentions")
        logits = getattr(out, "logits", None)
        last = logits[0, -1].float().cpu().numpy() if logits is not None and logits.ndim == 3 else None
        decodes = last is not None and card.family == "decoder"
        best = display_tokens(tokenizer, [int(last.argmax())])[0] if decodes else None
        return Capture(
            model_name=card.name,
            family=card.family,
            sequence=_sequence(tokenizer, ids[0]),
            attentions=attentions,
            hidden_states=_stack(out.hidden_states, "hidden states"),
            windows=layer_windows(model.config, attentions.shape[0]),
            next_token_logits=last,
            next_token=best,
        )


def _capture_seq2seq(loaded, source, target, limit, device, free_bytes, max_bytes) -> Capture:
    model, tokenizer, card = loaded.model, loaded.tokenizer, loaded.card
    src = tokenizer(source, return_tensors="pt")["input_ids"]
    _check_length(src.shape[1], limit, "source text")
    generated = not (target and target.strip())
    if generated:
        budget = GENERATE_MAX_TOKENS if limit is None else min(GENERATE_MAX_TOKENS, limit - 1)
        tgt = torch.tensor([hooked.greedy_decoder_ids(loaded, src[0].tolist(), budget)])
    else:
        tgt = torch.tensor([hooked.decoder_prefix(model, tokenizer, target)])
    _check_length(tgt.shape[1], limit, "target prefix")
    _check_memory(card, src.shape[1], tgt.shape[1], free_bytes, max_bytes)
    out = hooked.run(
        loaded,
        {"input_ids": src.to(device), "decoder_input_ids": tgt.to(device)},
        output_attentions=True,
        output_hidden_states=True,
        use_cache=False,
    )
    attentions = _stack(out.decoder_attentions, "decoder attentions")
    last = out.logits[0, -1].float().cpu().numpy()
    return Capture(
        model_name=card.name,
        family=card.family,
        sequence=_sequence(tokenizer, tgt[0]),
        attentions=attentions,
        hidden_states=_stack(out.decoder_hidden_states, "decoder hidden states"),
        windows=layer_windows(model.config, attentions.shape[0]),
        next_token_logits=last,
        next_token=display_tokens(tokenizer, [int(last.argmax())])[0],
        source=_sequence(tokenizer, src[0]),
        encoder_attentions=_stack(out.encoder_attentions, "encoder attentions"),
        encoder_hidden_states=_stack(out.encoder_hidden_states, "encoder hidden states"),
        cross_attentions=_stack(out.cross_attentions, "cross-attentions"),
        target_generated=generated,
    )


def _sequence(tokenizer, ids: torch.Tensor) -> Sequence:
    ids = [int(i) for i in ids.tolist()]
    return Sequence(tuple(ids), tuple(display_tokens(tokenizer, ids)), tuple(special_flags(tokenizer, ids)))


def _stack(tensors, what: str) -> np.ndarray:
    """A per-layer tuple of [1, ...] tensors as one float32 array [layer, ...] on the CPU."""
    if not tensors:
        raise InputError(
            f"The model returned no {what}. Attention weights need eager attention: load the model "
            "through Transformer Explorer (it sets attn_implementation='eager')."
        )
    return torch.stack([t[0].float().cpu() for t in tensors]).numpy()


def _check_length(n: int, limit: int | None, what: str) -> None:
    if limit is not None and n > limit:
        raise InputError(
            f"The {what} is {n} tokens long; this model reads at most {limit} tokens. Shorten it."
        )


def capture_bytes(card, n_q: int, n_k: int) -> int:
    """What a capture of `n_q` query and `n_k` key positions takes, counting the model's own copy of
    the attention maps while it runs (float32)."""
    maps = card.n_layers * card.n_heads * n_q * max(n_k, n_q) * 4
    hidden = (card.n_layers + 2) * (n_q + n_k) * card.d_model * 4
    return 2 * maps + 2 * hidden


def _check_memory(card, n_q: int, n_k: int, free_bytes: int | None, max_bytes: int | None = None) -> None:
    need = capture_bytes(card, n_q, n_k)
    if max_bytes is not None and need > max_bytes:
        raise InputError(
            f"Keeping every attention map for {max(n_q, n_k)} tokens takes about "
            f"{devices.human_bytes(need)}; this server lets one run keep at most "
            f"{devices.human_bytes(max_bytes)} (its memory is shared by every user). Shorten the text."
        )
    free = free_bytes if free_bytes is not None else devices.available_bytes("cpu")
    if need > MEMORY_SHARE * free:
        raise InputError(
            f"Keeping every attention map for {max(n_q, n_k)} tokens takes about "
            f"{devices.human_bytes(need)}, more than half the free memory ({devices.human_bytes(free)}). "
            "Shorten the text."
        )
