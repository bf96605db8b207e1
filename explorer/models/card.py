"""The architecture card: what a model is, computed from its config and its weights."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

FAMILIES = ("encoder", "decoder", "encoder-decoder")
# BERT-like encoders and the original seq2seq models normalize after each residual addition.
POST_NORM_TYPES = {
    "bert", "roberta", "distilbert", "albert", "electra", "xlm-roberta", "camembert", "mpnet",
    "deberta", "deberta-v2", "ernie", "megatron-bert", "bart", "marian", "data2vec-text",
}  # fmt: skip


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str  # encoder | decoder | encoder-decoder
    architecture: str  # the loaded class, e.g. LlamaForCausalLM
    model_type: str
    source: str
    n_params: int
    n_layers: int  # transformer blocks in all (encoder-decoders: encoder_layers + decoder_layers)
    n_heads: int  # query heads per layer
    n_kv_heads: int  # key/value heads per layer (fewer than n_heads: grouped-query attention)
    attention: str
    d_model: int
    d_head: int
    d_ff: int | None
    ffn: str
    vocab_size: int
    context_length: int | None
    position_encoding: str
    norm: str
    norm_placement: str
    activation: str
    sliding_window: int | None
    layer_types: tuple[str, ...]  # per layer: full_attention / sliding_attention, when they differ
    tied_embeddings: bool
    chat_template: bool
    dtype: str
    device: str
    memory_bytes: int
    encoder_layers: int | None = None
    decoder_layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layer_types"] = list(self.layer_types)
        if self.family != "encoder-decoder":
            data.pop("encoder_layers")
            data.pop("decoder_layers")
        return data


def detect_family(config) -> str:
    """encoder, decoder or encoder-decoder, from the config alone."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) and not a.startswith("Bert") for a in archs):
        return "decoder"
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def _first(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _text_config(config):
    """Multimodal configs keep the language model's numbers in a text sub-config."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def build_card(model, tokenizer, name: str, source: str) -> ModelCard:
    config = _text_config(model.config)
    family = detect_family(model.config)
    modules = dict(model.named_modules())
    class_names = Counter(type(m).__name__ for m in modules.values())

    d_model = int(_first(config, "hidden_size", "d_model", "n_embd", "dim"))
    n_heads = int(_first(config, "num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"))
    n_kv = _first(config, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if n_kv is None and getattr(config, "multi_query", False):
        n_kv = 1
    n_kv = int(n_kv or n_heads)
    d_head = int(_first(config, "head_dim", "d_kv", default=d_model // n_heads))

    if family == "encoder-decoder":
        enc = int(_first(config, "encoder_layers", "num_layers", "num_hidden_layers"))
        dec = int(_first(config, "decoder_layers", "num_decoder_layers", default=enc))
        n_layers = enc + dec
    else:
        enc = dec = None
        n_layers = int(_first(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers"))

    activation = str(
        _first(config, "hidden_activation", "hidden_act", "activation_function", "dense_act_fn", default="?")
    )
    gated = any(n.endswith(("gate_proj", "wi_0", "w1", "gate_up_proj")) for n in modules) or str(
        getattr(config, "feed_forward_proj", "")
    ).startswith("gated")
    d_ff = _first(config, "intermediate_size", "encoder_ffn_dim", "d_ff", "ffn_dim", "n_inner")
    if d_ff is None and config.model_type == "distilbert":
        d_ff = getattr(config, "hidden_dim", None)
    if d_ff is None and config.model_type in ("gpt2", "gpt_neo", "gptj"):
        d_ff = 4 * d_model  # n_inner=None means 4 x n_embd in these models
    ffn = _ffn_kind(activation, gated)

    params = {id(p): p for p in model.parameters()}.values()
    buffers = list(model.buffers())
    n_params = sum(p.numel() for p in params)
    memory = sum(p.numel() * p.element_size() for p in params) + sum(
        b.numel() * b.element_size() for b in buffers
    )
    first = next(iter(params))

    layer_types = tuple(getattr(config, "layer_types", None) or ())
    sliding = getattr(config, "sliding_window", None)
    unused = bool(layer_types) and "sliding_attention" not in layer_types
    if unused or not getattr(config, "use_sliding_window", True):
        sliding = None  # the config names a window that no layer uses (Qwen2: use_sliding_window=False)
    if len(set(layer_types)) <= 1:
        layer_types = ()

    vocab = int(_first(config, "vocab_size", default=len(tokenizer)))
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(head is not None and embed is not None and head.weight is embed.weight)

    device = str(first.device)
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(map(str, device_map.values()))) > 1:
        spread = Counter(str(v) for v in device_map.values())
        device = "device_map=auto: " + ", ".join(f"{d} ({n} modules)" for d, n in spread.items())

    return ModelCard(
        name=name,
        family=family,
        architecture=type(model).__name__,
        model_type=str(model.config.model_type),
        source=source,
        n_params=int(n_params),
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        attention=_attention_kind(n_heads, n_kv),
        d_model=d_model,
        d_head=d_head,
        d_ff=int(d_ff) if d_ff is not None else None,
        ffn=ffn,
        vocab_size=vocab,
        context_length=_context_length(config, tokenizer),
        position_encoding=_position_encoding(config, modules, class_names),
        norm=_norm(config, class_names),
        norm_placement=_norm_placement(config, modules),
        activation=activation,
        sliding_window=int(sliding) if sliding else None,
        layer_types=layer_types,
        tied_embeddings=tied,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        dtype=str(first.dtype).replace("torch.", ""),
        device=device,
        memory_bytes=int(memory),
        encoder_layers=enc,
        decoder_layers=dec,
    )


def _attention_kind(n_heads: int, n_kv: int) -> str:
    if n_kv == n_heads:
        return "multi-head"
    if n_kv == 1:
        return f"multi-query (all {n_heads} query heads share 1 key/value head)"
    return f"grouped-query ({n_heads // n_kv} query heads share each of {n_kv} key/value heads)"


def _ffn_kind(activation: str, gated: bool) -> str:
    act = activation.lower()
    if not gated:
        return f"two-layer MLP ({activation})"
    if act in ("silu", "swish"):
        return "gated MLP (SwiGLU)"
    if act.startswith("gelu") or "gelu" in act:
        return "gated MLP (GeGLU)"
    return f"gated MLP ({activation})"


def _context_length(config, tokenizer) -> int | None:
    value = _first(config, "max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
    if value is not None:
        return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 10**7 else None


def _rope_theta(config) -> str:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        if all(isinstance(v, dict) for v in params.values()):  # one entry per layer type (Gemma 3)
            parts = [
                f"{k.replace('_attention', '')} θ={v.get('rope_theta', '?'):g}" for k, v in params.items()
            ]
            return ", ".join(parts)
        theta = params.get("rope_theta")
        kind = params.get("rope_type", "default")
        text = f"θ={theta:g}" if isinstance(theta, (int, float)) else ""
        return text + (f", {kind} scaling" if kind not in ("default", None) else "")
    theta = _first(config, "rope_theta", "rotary_emb_base")
    return f"θ={theta:g}" if isinstance(theta, (int, float)) else ""


def _position_encoding(config, modules: dict, class_names: Counter) -> str:
    kind = getattr(config, "position_embedding_type", None)
    if kind in ("relative_key", "relative_key_query"):
        return f"relative ({kind})"
    buckets = getattr(config, "relative_attention_num_buckets", None)
    if buckets:
        return f"relative position bias ({buckets} buckets, T5-style)"
    if getattr(config, "alibi", False) or config.model_type in ("bloom", "mpt"):
        return "ALiBi (linear bias by distance)"
    if any("Rotary" in n for n in class_names) or getattr(config, "rope_parameters", None):
        theta = _rope_theta(config)
        return f"rotary (RoPE{', ' + theta if theta else ''})"
    if any("Sinusoidal" in n for n in class_names):
        return "sinusoidal (fixed)"
    for name, module in modules.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("position_embeddings", "wpe", "embed_positions") and hasattr(module, "weight"):
            return f"learned absolute ({module.weight.shape[0]} positions)"
    return "none found"


def _norm(config, class_names: Counter) -> str:
    eps = _first(config, "rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps")
    suffix = f", eps={eps:g}" if isinstance(eps, (int, float)) else ""
    rms = sum(n for c, n in class_names.items() if "RMSNorm" in c or c == "T5LayerNorm")
    ln = sum(n for c, n in class_names.items() if c.endswith("LayerNorm") and c != "T5LayerNorm")
    if rms >= ln and rms:
        return f"RMSNorm{suffix}"
    if ln:
        return f"LayerNorm{suffix}"
    return "none found"


def _norm_placement(config, modules: dict) -> str:
    names = {n.rsplit(".", 1)[-1] for n in modules}
    if {"pre_feedforward_layernorm", "post_feedforward_layernorm"} <= names:
        return "pre- and post-norm (around each sub-layer)"
    if config.model_type in POST_NORM_TYPES:
        return "post-norm (after each residual add)"
    return "pre-norm (before each sub-layer)"


ATTENTION_PARTS = {"attn", "attention", "self_attn", "selfattention", "self", "mixer"}
CROSS_PARTS = {"encdecattention", "encoder_attn", "crossattention", "cross_attn"}
FFN_PARTS = {
    "mlp", "ffn", "feed_forward", "densereludense", "intermediate", "fc1", "fc2", "block_sparse_moe",
    "experts",
}  # fmt: skip
HEAD_PARTS = {"lm_head", "cls", "classifier", "qa_outputs", "pooler", "score", "head"}
PARAM_GROUPS = (
    "embeddings", "attention", "cross-attention", "feed-forward", "normalization", "output head", "other",
)  # fmt: skip


def parameter_groups(model) -> dict[str, int]:
    """Parameter counts by what they do, from the module tree (tied weights counted once, where they
    are first defined: a tied LM head counts as embeddings). Sums to the model's parameter count."""
    import torch.nn as nn

    groups = dict.fromkeys(PARAM_GROUPS, 0)
    seen: set[int] = set()
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        parts = [p.lower() for p in path.split(".") if not p.isdigit()]
        names = set(parts)
        bert_ffn_out = len(parts) >= 2 and parts[-2] == "output"  # BERT: layer.N.output.dense
        kind = type(module).__name__
        if parts and parts[0] in HEAD_PARTS:
            group = "output head"
        elif "Norm" in kind:
            group = "normalization"
        elif CROSS_PARTS & names:
            group = "cross-attention"
        elif ATTENTION_PARTS & names:  # includes T5's relative position bias table
            group = "attention"
        elif isinstance(module, nn.Embedding) or "embed" in kind.lower():
            group = "embeddings"
        elif FFN_PARTS & names or bert_ffn_out:
            group = "feed-forward"
        else:
            group = "other"
        groups[group] += sum(p.numel() for p in own)
    return {k: v for k, v in groups.items() if v}
