"""Direct logit attribution: the parts add up to the model's own logit difference on every family, whether
its blocks only add to the residual stream or normalize it after every sub-layer (post-norm, with the norms'
scales from the run), masked-LM heads included; soft-capped logits are refused."""

from __future__ import annotations

import json

import pytest

from explorer.__main__ import main as cli
from explorer.analyses import dla
from explorer.models.anatomy import UnsupportedModel

TEXT = "the cat sat on the mat because it was"
ADDING = ["llama", "gpt2", "t5", "gpt_neox", "opt", "mistral", "qwen3", "phi3", "olmo2", "gemma3_text",
          "bloom", "gptj", "falcon", "phi", "mbart", "cohere", "starcoder2", "gpt_bigcode",
          "biogpt"]  # fmt: skip
POST_NORM = ["bart", "marian"]
MASKED = ["bert", "roberta", "distilbert", "electra", "albert"]
MASKED_TEXT = "the cat sat on the [MASK] because it was"
REFUSED = {"gemma2": "soft-caps"}


@pytest.mark.parametrize("kind", ADDING)
def test_the_parts_sum_to_the_models_logit_difference(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    found = dla.attribute(loaded, TEXT, " tired", " dog", prefix="the")
    assert found.total == pytest.approx(found.logit_diff, abs=1e-4)
    names = {p.name for p in found.parts}
    assert {"embeddings", "head", "ffn"} <= names
    n_heads = (
        loaded.model.config.num_attention_heads if hasattr(loaded.model.config, "num_attention_heads") else 4
    )
    assert found.heads().shape[1] == n_heads


@pytest.mark.parametrize("kind", POST_NORM + MASKED)
def test_post_norm_models_and_masked_lm_heads_sum_too(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    text = MASKED_TEXT if kind in MASKED else TEXT
    found = dla.attribute(loaded, text, " tired", " dog", prefix="the")
    assert found.total == pytest.approx(found.logit_diff, abs=1e-4)
    assert found.logit_diff != 0
    names = {p.name for p in found.parts}
    assert {"embeddings", "head", "ffn", "ffn norm bias"} <= names
    if kind in MASKED:
        assert {"LM head dense bias", "LM head norm bias"} <= names
        assert found.tokens[found.position] == "[MASK]"
    else:
        assert "cross head" in names


def test_a_post_norm_heads_value_is_its_path_with_the_scales_frozen(tiny_dir):
    """On a BERT whose later sub-layers write nothing (their output weights and biases zeroed), layer 0's
    heads reach the logits through the norms and the masked-LM head only. With every norm's scale and the
    head's activation gain detached (frozen at this run's values, in the model's own modules), autograd's
    gradient of the logit difference at layer 0's attention output, dotted with a head's output, must be
    that head's value."""
    import torch

    from explorer.models.anatomy import Proj
    from explorer.models.loading import LoadRequest, load_model
    from explorer.runs import hooked

    loaded = load_model(LoadRequest("folder", str(tiny_dir("bert"))))  # its own copy: changed below
    model, tok = loaded.model, loaded.tokenizer
    layers = model.bert.encoder.layer
    with torch.no_grad():
        for dense in (layers[0].output.dense, layers[1].attention.output.dense, layers[1].output.dense):
            dense.weight.zero_()
            dense.bias.zero_()
    found = dla.attribute(loaded, MASKED_TEXT, " tired", " dog")
    assert found.total == pytest.approx(found.logit_diff, abs=1e-4)

    def frozen_norm(m):
        def forward(x):
            centred = x - x.mean(-1, keepdim=True)
            scale = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + m.eps).detach()
            return centred * scale * m.weight + m.bias

        return forward

    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.forward = frozen_norm(m)
    transform = model.cls.predictions.transform
    act = transform.transform_act_fn
    act_forward = act.forward
    act.forward = lambda z: z * (act_forward(z) / z).detach()
    seen = {}

    def grab(module, args, out):
        out.requires_grad_(True)
        out.retain_grad()
        seen["o"] = out

    att = layers[0].attention
    handle = att.output.dense.register_forward_hook(grab)
    z = {}
    pre = att.output.dense.register_forward_pre_hook(lambda m, args: z.setdefault("z", args[0].detach()))
    ids = tok(MASKED_TEXT)["input_ids"]
    t = ids.index(tok.mask_token_id)
    with torch.enable_grad():
        logits = model(**hooked.inputs(model, ids)).logits[0, t]
        (logits[found.target.token_id] - logits[found.foil.token_id]).backward()
    handle.remove()
    pre.remove()
    grad = seen["o"].grad[0, t]  # (d_model,)
    n_heads = model.config.num_attention_heads
    w_o = Proj(att.output.dense).weight().float().view(-1, n_heads, 32 // n_heads)
    heads = z["z"][0, t].view(n_heads, -1)
    for h in range(n_heads):
        value = next(p.value for p in found.parts if p.name == "head" and p.layer == 0 and p.head == h)
        assert abs(value) > 1e-6
        assert value == pytest.approx(float(grad @ (w_o[:, h] @ heads[h])), abs=1e-5)


def test_opt_350m_post_norm_and_projected_output_sums(tmp_path):
    """OPT-350m's shape: post-norm blocks and a projection between the last block and the unembedding."""
    import torch
    import transformers as tf

    from tests.conftest import VOCAB, load_as_folder

    torch.manual_seed(0)
    config = tf.OPTConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, do_layer_norm_before=False, word_embed_proj_dim=16, pad_token_id=0,
        bos_token_id=5, eos_token_id=6,
    )  # fmt: skip
    loaded = load_as_folder(tf.OPTForCausalLM(config), tmp_path)
    found = dla.attribute(loaded, TEXT, " tired", " dog")
    assert found.total == pytest.approx(found.logit_diff, abs=1e-5) and found.logit_diff != 0
    assert "ffn norm bias" in {p.name for p in found.parts}


def test_without_a_foil_the_parts_sum_to_the_targets_logit(tiny_loaded):
    found = dla.attribute(tiny_loaded("llama"), TEXT, " tired")
    assert found.foil is None and found.total == pytest.approx(found.logit_diff, abs=1e-4)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_what_is_not_a_sum_of_parts_is_refused(tiny_loaded, kind):
    with pytest.raises(UnsupportedModel, match=REFUSED[kind]):
        dla.attribute(tiny_loaded(kind), TEXT, " tired", prefix="the")


def test_the_command_prints_one_object(tiny_dir, capsys):
    assert (
        cli(["dla", str(tiny_dir("gpt2")), "--text", TEXT, "--target", " tired", "--foil", " dog", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"total", "parts", "logit_diff"}
    assert abs(out["total"] - out["logit_diff"]) < 1e-4
    assert sum(p["value"] for p in out["parts"]) == pytest.approx(out["total"])
    assert {"name", "layer", "head", "value"} == set(out["parts"][0])
