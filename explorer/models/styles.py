"""What each family's modeling code in transformers calls the parts of a block, as data: one `Style` per
model type (`STYLES`), the few choices a config makes inside a family (`adjust`), and `discover` for a
model type not listed, from the common names. `explorer.models.anatomy` builds a model's anatomy from
these; add a family here (README, "Architectures")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from explorer.errors import UnsupportedModel

# -- the knowledge ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Names in one family's modeling code. Paths are dotted, relative to a block unless said otherwise;
    None: the family has no such part."""

    layers: dict[str, str]  # stack -> path from the model's base (`model.base_model`) to its blocks
    attn: str
    q: str | None = "q_proj"
    k: str | None = "k_proj"
    v: str | None = "v_proj"
    qkv: str | None = None  # a fused projection, with `layout`
    layout: str = "concat"  # concat [q|k|v] | per-head (head, 3, d_head) | grouped (kv, group+2, d_head)
    o: str = "self_attn.o_proj"  # relative to the block (BERT's sits outside the attention module)
    attn_norm: str | None = "input_layernorm"
    ffn_norm: str | None = "post_attention_layernorm"
    attn_post_norm: str | None = None
    ffn_post_norm: str | None = None
    # post-norm: the norm of the stream plus a sub-layer's output, which the next part reads
    attn_add_norm: str | None = None
    cross_add_norm: str | None = None
    ffn_add_norm: str | None = None
    ffn: str = "mlp"  # the module whose forward input is the FFN input
    up: str = "mlp.up_proj"
    gate: str | None = "mlp.gate_proj"
    gate_up: str | None = None  # fused [gate|up] (Phi-3)
    down: str = "mlp.down_proj"
    act: str = "mlp.act_fn"
    q_norm: str | None = None
    k_norm: str | None = None
    qk_norm_per_head: bool = True
    cross: str | None = None
    cross_norm: str | None = None
    cross_entry: str | None = None
    placement: str = "pre"
    parallel: bool = False
    position: str = "rope"
    final_norm: dict[str, str] = field(default_factory=dict)  # stack -> path from the base model
    scale: str | None = None  # the attention module's attribute holding its scale (default `scaling`)


# fmt: off
LLAMA = Style(layers={"decoder": "layers"}, attn="self_attn", final_norm={"decoder": "norm"})
BERT = Style(
    layers={"encoder": "encoder.layer"}, attn="attention.self", q="query", k="key", v="value",
    o="attention.output.dense", attn_norm=None, ffn_norm=None, ffn="intermediate",
    up="intermediate.dense", gate=None, down="output.dense", act="intermediate.intermediate_act_fn",
    attn_add_norm="attention.output.LayerNorm", ffn_add_norm="output.LayerNorm", placement="post",
    position="learned",
)
BART = Style(
    layers={"encoder": "encoder.layers", "decoder": "decoder.layers"}, attn="self_attn",
    o="self_attn.out_proj", attn_norm=None, ffn_norm=None, ffn="fc1", up="fc1", gate=None, down="fc2",
    act="activation_fn", cross="encoder_attn", cross_entry="encoder_attn",
    attn_add_norm="self_attn_layer_norm", cross_add_norm="encoder_attn_layer_norm",
    ffn_add_norm="final_layer_norm", placement="post", position="learned",
)
FUSED = {"q": None, "k": None, "v": None}  # q, k and v in one matrix (`qkv`, with its `layout`)
PLAIN_FFN = {"gate": None}  # act(x W_up + b) W_down
STYLES: dict[str, Style] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": replace(LLAMA, q_norm="self_attn.q_norm", k_norm="self_attn.k_norm"),
    "olmo2": replace(
        LLAMA, attn_norm=None, ffn_norm=None, attn_post_norm="post_attention_layernorm",
        ffn_post_norm="post_feedforward_layernorm", q_norm="self_attn.q_norm", k_norm="self_attn.k_norm",
        qk_norm_per_head=False, placement="post-out",
    ),
    "gemma3_text": replace(
        LLAMA, ffn_norm="pre_feedforward_layernorm", attn_post_norm="post_attention_layernorm",
        ffn_post_norm="post_feedforward_layernorm", q_norm="self_attn.q_norm", k_norm="self_attn.k_norm",
        placement="sandwich",
    ),
    "phi3": replace(LLAMA, **FUSED, qkv="self_attn.qkv_proj", up="mlp.gate_up_proj", gate=None,
                    gate_up="mlp.gate_up_proj", act="mlp.activation_fn"),
    "gpt2": Style(
        layers={"decoder": "h"}, attn="attn", **FUSED, qkv="attn.c_attn", o="attn.c_proj", attn_norm="ln_1",
        ffn_norm="ln_2", up="mlp.c_fc", **PLAIN_FFN, down="mlp.c_proj", act="mlp.act", position="learned",
        final_norm={"decoder": "ln_f"},
    ),
    # parallel or sequential: config.use_parallel_residual (see _adjust)
    "gpt_neox": Style(
        layers={"decoder": "layers"}, attn="attention", **FUSED, qkv="attention.query_key_value",
        layout="per-head", o="attention.dense", up="mlp.dense_h_to_4h", **PLAIN_FFN, down="mlp.dense_4h_to_h",
        act="mlp.act", final_norm={"decoder": "final_layer_norm"},
    ),
    "gptj": Style(
        layers={"decoder": "h"}, attn="attn", o="attn.out_proj", attn_norm="ln_1", ffn_norm="ln_1",
        up="mlp.fc_in", **PLAIN_FFN, down="mlp.fc_out", act="mlp.act", parallel=True,
        final_norm={"decoder": "ln_f"},
    ),
    "phi": Style(
        layers={"decoder": "layers"}, attn="self_attn", o="self_attn.dense", ffn_norm="input_layernorm",
        up="mlp.fc1", **PLAIN_FFN, down="mlp.fc2", act="mlp.activation_fn", parallel=True,
        q_norm="self_attn.q_layernorm", k_norm="self_attn.k_layernorm",
        final_norm={"decoder": "final_layernorm"},
    ),
    # parallel or not, its norms, its fused layout and ALiBi or rotary: from the config (see _adjust)
    "falcon": Style(
        layers={"decoder": "h"}, attn="self_attention", **FUSED, qkv="self_attention.query_key_value",
        layout="falcon", o="self_attention.dense", up="mlp.dense_h_to_4h", **PLAIN_FFN,
        down="mlp.dense_4h_to_h", act="mlp.act", final_norm={"decoder": "ln_f"}, scale="inv_norm_factor",
    ),
    "bloom": Style(
        layers={"decoder": "h"}, attn="self_attention", **FUSED, qkv="self_attention.query_key_value",
        layout="per-head", o="self_attention.dense", up="mlp.dense_h_to_4h", **PLAIN_FFN,
        down="mlp.dense_4h_to_h", act="mlp.gelu_impl", position="alibi", final_norm={"decoder": "ln_f"},
        scale="inv_norm_factor",
    ),
    # do_layer_norm_before False (OPT-350m): post-norm (see _adjust)
    "opt": Style(
        layers={"decoder": "decoder.layers"}, attn="self_attn", o="self_attn.out_proj",
        attn_norm="self_attn_layer_norm", ffn_norm="final_layer_norm", ffn="fc1", up="fc1", **PLAIN_FFN,
        down="fc2", act="activation_fn", position="learned",
        final_norm={"decoder": "decoder.final_layer_norm"},
    ),
    "bert": BERT,
    "roberta": BERT,
    "electra": BERT,
    "albert": replace(BERT, layers={"encoder": "encoder.albert_layer_groups"}, attn="attention",
                      o="attention.dense", ffn="ffn", up="ffn", down="ffn_output", act="activation",
                      attn_add_norm="attention.LayerNorm", ffn_add_norm="full_layer_layer_norm"),
    "distilbert": replace(BERT, layers={"encoder": "transformer.layer"}, attn="attention", q="q_lin",
                          k="k_lin", v="v_lin", o="attention.out_lin", ffn="ffn", up="ffn.lin1",
                          down="ffn.lin2", act="ffn.activation", attn_add_norm="sa_layer_norm",
                          ffn_add_norm="output_layer_norm"),
    "bart": BART,
    "mbart": replace(
        BART, attn_norm="self_attn_layer_norm", ffn_norm="final_layer_norm",
        cross_norm="encoder_attn_layer_norm", attn_add_norm=None, cross_add_norm=None, ffn_add_norm=None,
        placement="pre", final_norm={"encoder": "encoder.layer_norm", "decoder": "decoder.layer_norm"},
    ),
    "marian": replace(BART, position="sinusoidal"),
    "plbart": BART,
    "t5": Style(
        layers={"encoder": "encoder.block", "decoder": "decoder.block"}, attn="layer.0.SelfAttention",
        q="q", k="k", v="v", o="layer.0.SelfAttention.o", attn_norm="layer.0.layer_norm",
        ffn_norm="layer.-1.layer_norm", ffn="layer.-1.DenseReluDense", up="layer.-1.DenseReluDense.wi",
        **PLAIN_FFN, down="layer.-1.DenseReluDense.wo", act="layer.-1.DenseReluDense.act",
        cross="layer.1.EncDecAttention", cross_norm="layer.1.layer_norm", cross_entry="layer.1",
        position="relative",
        final_norm={"encoder": "encoder.final_layer_norm", "decoder": "decoder.final_layer_norm"},
    ),
}
# fmt: on
# Masked-LM heads that transform the final stream before the unembedding: dense -> activation -> norm
# (paths from the model with the head)
LM_HEAD_TRANSFORMS = {
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm"),
    "electra": ("generator_predictions.dense", "generator_predictions.LayerNorm"),
    "albert": ("predictions.dense", "predictions.LayerNorm"),
    "distilbert": ("vocab_transform", "vocab_layer_norm"),
}
LM_HEAD_TRANSFORMS["xlm-roberta"] = LM_HEAD_TRANSFORMS["camembert"] = LM_HEAD_TRANSFORMS["roberta"]
STYLES["mt5"] = STYLES["umt5"] = STYLES["t5"]
STYLES["blenderbot"] = STYLES["mbart"]  # pre-norm BART-like encoder-decoders with a final norm per stack
STYLES["pegasus"] = STYLES["m2m_100"] = replace(STYLES["mbart"], position="sinusoidal")
STYLES["xlm-roberta"] = STYLES["camembert"] = STYLES["roberta"]
STYLES["qwen2_moe"] = STYLES["qwen3_moe"] = STYLES["qwen3"]  # routing pages; their FFN is a mixture


# -- reading paths ---------------------------------------------------------------------------------------


def at_path(root: Any, path: str | None) -> Any:
    """The module at a dotted path ('layer.-1.DenseReluDense'); None for no path or a missing part."""
    if path is None:
        return None
    found = root
    for name in path.split("."):
        if found is None:
            return None
        if name.lstrip("-").isdigit():
            try:
                found = found[int(name)]
            except (IndexError, TypeError):
                return None
        else:
            found = getattr(found, name, None)
    return found


def text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def adjust(model_type: str, style: Style, config: Any) -> Style:
    """The few choices a config makes inside one family's code."""
    if model_type == "gpt_neox":
        return replace(style, parallel=bool(config.use_parallel_residual))
    if model_type == "falcon":
        parallel = bool(config.parallel_attn or config.new_decoder_architecture)
        two = config.new_decoder_architecture and getattr(config, "num_ln_in_parallel_attn", 2) == 2
        return replace(
            style, parallel=parallel, attn_norm="ln_attn" if two else "input_layernorm",
            ffn_norm="ln_mlp" if two else ("input_layernorm" if parallel else "post_attention_layernorm"),
            position="alibi" if config.alibi else "rope",
        )  # fmt: skip
    if model_type == "opt" and not config.do_layer_norm_before:
        return replace(
            style, attn_norm=None, ffn_norm=None, attn_add_norm="self_attn_layer_norm",
            ffn_add_norm="final_layer_norm", placement="post",
        )  # fmt: skip
    if model_type == "distilbert" and getattr(config, "sinusoidal_pos_embds", False):
        return replace(style, position="sinusoidal")
    return style


# Names tried, in order, for a model type that is not in STYLES (paths relative to one block).
ATTENTIONS = ("self_attn", "attn", "attention", "self_attention")
OUTPUTS = ("o_proj", "out_proj", "dense", "c_proj", "o")
FUSED_QKV = ("qkv_proj", "Wqkv", "c_attn")  # [q | k | v] side by side
FFNS = (  # (entry, up, gate, down, activation)
    ("mlp", "mlp.up_proj", "mlp.gate_proj", "mlp.down_proj", "mlp.act_fn"),
    ("mlp", "mlp.fc1", None, "mlp.fc2", "mlp.activation_fn"),
    ("mlp", "mlp.c_fc", None, "mlp.c_proj", "mlp.act"),
    ("mlp", "mlp.dense_h_to_4h", None, "mlp.dense_4h_to_h", "mlp.act"),
    ("fc1", "fc1", None, "fc2", "activation_fn"),
    ("ffn", "ffn.up_proj", None, "ffn.down_proj", "ffn.act"),
    ("mlp", None, None, None, None),  # a mixture of experts (an `experts` list inside), or refused
    ("block_sparse_moe", None, None, None, None),
)
NORMS = (("input_layernorm", "post_attention_layernorm"), ("self_attn_layer_norm", "final_layer_norm"),
         ("ln_1", "ln_2"), ("norm1", "norm2"), ("norm_1", "norm_2"),
         ("attention_layernorm", "feedforward_layernorm"))  # fmt: skip
FINAL_NORMS = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm", "layer_norm")


def _first_path(root: Any, names: tuple[str | None, ...]) -> str | None:
    return next((n for n in names if n is not None and at_path(root, n) is not None), None)


def _discovered_position(base: Any, config: Any) -> str:
    """The position scheme of a model found by `discover`, from what its base model holds."""
    names = {type(m).__name__.lower() for m in base.modules()}
    if any("rotary" in n for n in names):
        return "rope"
    if getattr(config, "alibi", False) or getattr(getattr(config, "attn_config", None), "alibi", False):
        return "alibi"
    if any("sinusoidal" in n for n in names):
        return "sinusoidal"
    if any(at_path(base, n) is not None for n in ("wpe", "embed_positions", "position_embeddings")):
        return "learned"
    return "none"


def discover(model: Any) -> Style:
    """A style for a model type not in STYLES, from the common names of a block's parts (ATTENTIONS,
    OUTPUTS, FFNS, NORMS) and where its norms are: input and post-attention norms (pre-norm); those plus
    pre- and post-feed-forward norms (Gemma 2's sandwich); post-attention and post-feed-forward norms only
    (post-out, as OLMo 2); one input norm for both (parallel, as Cohere, StableLM). A block's output is
    checked against these sums where it matters (the Flow page). UnsupportedModel naming the first part
    that is not there."""
    base = getattr(model, "base_model", model)
    config = text_config(model)
    model_type = getattr(config, "model_type", "?")
    n = getattr(config, "num_hidden_layers", None)
    lists = [(name, m) for name, m in base.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    layers = next((name for name, m in lists if n is None or len(m) == n), None)
    if layers is None or getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModel(
            f"{type(model).__name__} (model type {model_type!r}) is not one of the families described in "
            "explorer/models/anatomy.py, and its blocks could not be found by the common names: add a Style."
        )
    block = at_path(base, layers)[0]
    where = f"{type(block).__name__} (model type {model_type!r})"
    attn = _first_path(block, ATTENTIONS)
    if attn is None:
        raise UnsupportedModel(f"Could not find the attention module of {where} by the common names.")
    style = replace(LLAMA, layers={"decoder": layers}, attn=attn, final_norm={})
    has = lambda name: at_path(block, name) is not None  # noqa: E731
    fused = _first_path(block, tuple(f"{attn}.{q}" for q in FUSED_QKV))
    if fused is not None:
        style = replace(style, **FUSED, qkv=fused)
    o = _first_path(block, tuple(f"{attn}.{name}" for name in OUTPUTS))
    style = replace(style, o=o or f"{attn}.o_proj")
    ffn = next((f for f in FFNS if has(f[0]) and (f[1] is None or has(f[1]))), None)
    if ffn is None:
        raise UnsupportedModel(f"Could not find the feed-forward network of {where} by the common names.")
    entry, up, gate, down, act = ffn
    if at_path(block, f"{entry}.gate_up_proj") is not None:
        up, gate = f"{entry}.gate_up_proj", None
        style = replace(style, gate_up=up)
    act = _first_path(
        block, (act, f"{entry}.act_fn", f"{entry}.activation_fn", f"{entry}.act", "activation_fn")
    )
    style = replace(
        style, ffn=entry, up=up or "", gate=_first_path(block, (gate,)), down=down or "", act=act or ""
    )
    if at_path(block, f"{attn}.q_norm") is not None:
        style = replace(style, q_norm=f"{attn}.q_norm", k_norm=f"{attn}.k_norm")
    elif at_path(block, f"{attn}.q_layernorm") is not None:
        style = replace(style, q_norm=f"{attn}.q_layernorm", k_norm=f"{attn}.k_layernorm")
    if has("pre_feedforward_layernorm") and has("post_feedforward_layernorm"):
        style = replace(
            style, attn_norm="input_layernorm", attn_post_norm="post_attention_layernorm",
            ffn_norm="pre_feedforward_layernorm", ffn_post_norm="post_feedforward_layernorm",
            placement="sandwich",
        )  # fmt: skip
    elif not has("input_layernorm") and has("post_attention_layernorm") and has("post_feedforward_layernorm"):
        style = replace(
            style, attn_norm=None, ffn_norm=None, attn_post_norm="post_attention_layernorm",
            ffn_post_norm="post_feedforward_layernorm", placement="post-out",
        )  # fmt: skip
    else:
        pair = next((p for p in NORMS if has(p[0])), None)
        if pair is None:
            raise UnsupportedModel(
                f"Could not find the norm before the attention of {where} by common names."
            )
        second = pair[1] if has(pair[1]) else None
        style = replace(style, attn_norm=pair[0], ffn_norm=second or pair[0], parallel=second is None)
    style = replace(style, position=_discovered_position(base, config))
    parent = layers.rpartition(".")[0]
    holder = at_path(base, parent) if parent else base
    final = _first_path(holder, FINAL_NORMS)
    if final is not None:
        style = replace(style, final_norm={"decoder": f"{parent}.{final}" if parent else final})
    return style


# Rotary on neighbouring pairs (x_2i, x_2i+1) instead of halves (x_i, x_i+d/2); GPT-J rotates its first
# config.rotary_dim dimensions only.
INTERLEAVED_ROTARY = {"gptj", "cohere", "cohere2"}
