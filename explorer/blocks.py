"""Where the parts of a transformer block are, per model family, for the pages that compute from weights.

`parts(model, stack, layer)` names the modules of one block: the self-attention module (its forward input
is the layer input after its norm), the modules whose outputs are what attention and the feed-forward
network add to the residual stream, and the feed-forward input and down projection. Families are the ones
whose modeling code in transformers 5.24 was read line by line (`STYLES`); any other model gets
`UnsupportedModel` with a message that says so, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from explorer.errors import InputError

# model_type -> the modeling code it follows
STYLES = {
    "bert": "bert",
    "roberta": "bert",
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "gemma3_text": "gemma3",
    "t5": "t5",
    "bart": "bart",
}
DISPLAY = "BERT, RoBERTa, GPT-2, Llama, Mistral, Qwen2, Gemma 3 (text), T5, BART"


class UnsupportedModel(Exception):
    """This model's family is not decomposed here; `str(err)` says so and lists the families that are."""


TextError = InputError  # the project's one error for input that cannot be run


@dataclass(frozen=True)
class Parts:
    """The modules of one block (see the module docstring)."""

    attn: Any  # self-attention; forward input (pos, d_model) = layer input after its norm
    attn_update: Any  # output (first element when a tuple) = what attention adds to the residual
    ffn_in: Any  # forward input = the feed-forward input after its norm
    ffn_down: Any  # the down projection; forward input = neuron activations (pos, d_ff)
    ffn_update: Any  # output = what the feed-forward network adds to the residual


def style(model: Any) -> str:
    """The modeling code `model` follows (a key of STYLES' values); UnsupportedModel otherwise."""
    model_type = getattr(model.config, "model_type", "?")
    found = STYLES.get(model_type)
    if found is None:
        raise UnsupportedModel(
            f"{type(model).__name__} (model type {model_type!r}) is not one of the families these pages "
            f"compute from the weights: {DISPLAY}."
        )
    return found


def stacks(model: Any) -> tuple[str, ...]:
    """The stacks with self-attention: ('encoder',), ('decoder',) or ('encoder', 'decoder')."""
    kind = style(model)
    if kind in ("t5", "bart"):
        return ("encoder", "decoder")
    return ("encoder",) if kind == "bert" else ("decoder",)


def attention_kinds(model: Any) -> tuple[str, ...]:
    """The stacks' self-attentions, and 'cross' (decoder queries on encoder keys) for encoder-decoders."""
    found = stacks(model)
    return found + ("cross",) if len(found) == 2 else found


def attention_module(model: Any, kind: str, layer: int) -> Any:
    """The attention module of `layer` for a kind of attention_kinds(model)."""
    if kind != "cross":
        return parts(model, kind, layer).attn
    block = layers(model, "decoder")[layer]
    return block.layer[1].EncDecAttention if style(model) == "t5" else block.encoder_attn


def causal(model: Any, stack: str) -> bool:
    if style(model) == "gemma3" and getattr(model.config, "use_bidirectional_attention", False):
        return False
    return stack == "decoder"


def _base(model: Any) -> Any:
    return getattr(model, "base_model", model)


def layers(model: Any, stack: str) -> Sequence[Any]:
    """The blocks of `stack`, in order."""
    kind, base = style(model), _base(model)
    if stack not in stacks(model):
        raise ValueError(f"{type(model).__name__} has no {stack} stack")
    if kind == "bert":
        return base.encoder.layer
    if kind == "gpt2":
        return base.h
    if kind in ("llama", "gemma3"):
        return base.layers
    if kind == "t5":
        return getattr(model, stack).block
    return getattr(base, stack).layers  # bart


def parts(model: Any, stack: str, layer: int) -> Parts:
    kind, block = style(model), layers(model, stack)[layer]
    if kind == "bert":
        return Parts(
            block.attention.self, block.attention.output.dense, block.intermediate, block.output.dense,
            block.output.dense,
        )  # fmt: skip
    if kind == "gpt2":
        return Parts(block.attn, block.attn, block.mlp, block.mlp.c_proj, block.mlp)
    if kind == "llama":
        return Parts(block.self_attn, block.self_attn, block.mlp, block.mlp.down_proj, block.mlp)
    if kind == "gemma3":  # Gemma normalizes each sub-layer's output before adding it to the residual
        return Parts(
            block.self_attn, block.post_attention_layernorm, block.mlp, block.mlp.down_proj,
            block.post_feedforward_layernorm,
        )  # fmt: skip
    if kind == "t5":
        ff = block.layer[-1].DenseReluDense
        return Parts(block.layer[0].SelfAttention, block.layer[0].SelfAttention, ff, ff.wo, ff)
    return Parts(block.self_attn, block.self_attn, block.fc1, block.fc2, block.fc2)  # bart


def context_limit(model: Any, tokenizer: Any = None) -> int | None:
    """The most positions the model reads (learned position tables, rotary's trained length); None when
    it has no fixed limit (T5's relative buckets)."""
    config, kind = model.config, style(model)
    if kind == "t5":
        return None
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode(model: Any, tokenizer: Any, text: str, limit: int | None = None) -> list[int]:
    """Token ids of `text` with the tokenizer's special tokens; TextError for empty or too long text.
    `limit` lowers the model's own context limit (a page drawing every position)."""
    if not text or not text.strip():
        raise TextError("The text is empty: type a sentence to run through the model.")
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    most = context_limit(model)
    if most is not None and len(ids) > most:
        raise TextError(
            f"The text is {len(ids):,} tokens long and this model reads at most {most:,} (its context "
            "length). Shorten the text."
        )
    if limit is not None and len(ids) > limit:
        raise TextError(
            f"The text is {len(ids):,} tokens long; this page shows at most {limit:,}. Shorten it."
        )
    return ids


def decoder_input(model: Any, ids: list[int]) -> list[int]:
    """Encoder-decoders: the decoder reads the text shifted right behind its start token (teacher forcing)."""
    config = model.config
    start = config.decoder_start_token_id
    if start is None:
        start = config.pad_token_id if config.pad_token_id is not None else 0
    return [int(start)] + list(ids[:-1])


def model_inputs(model: Any, ids: list[int], device: Any) -> dict[str, torch.Tensor]:
    """Keyword arguments for one forward pass of `ids` (plus the decoder's input for encoder-decoders)."""
    x = torch.tensor([ids], device=device)
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x)}
    if len(stacks(model)) == 2:
        inputs["decoder_input_ids"] = torch.tensor([decoder_input(model, ids)], device=device)
    return inputs


def input_device(model: Any) -> torch.device:
    return model.get_input_embeddings().weight.device


def out_proj(model: Any, stack: str, layer: int) -> Any:
    """The attention output projection of `layer`: its forward input (pos, head * d_head) is the heads'
    outputs side by side, head h in columns h*d_head:(h+1)*d_head (o_proj, c_proj, out_proj, T5's `o`,
    BERT's attention.output.dense)."""
    kind, attn = style(model), parts(model, stack, layer).attn
    if kind == "bert":
        return layers(model, stack)[layer].attention.output.dense
    if kind == "gpt2":
        return attn.c_proj
    if kind in ("llama", "gemma3"):
        return attn.o_proj
    return attn.o if kind == "t5" else attn.out_proj  # bart


def n_heads(model: Any, stack: str) -> int:
    """Query heads per layer of `stack`."""
    config, kind = model.config, style(model)
    if kind == "gpt2":
        return int(config.n_head)
    if kind == "t5":
        return int(config.num_heads)
    if kind == "bart":
        return int(getattr(config, f"{stack}_attention_heads"))
    return int(config.num_attention_heads)
