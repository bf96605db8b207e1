"""Attention from scratch equals the model's own maps on every architecture in ARCHITECTURES, and on
variants that switch on what the default tiny configs leave out (ALiBi in Falcon, Phi's q/k LayerNorm,
Gemma's softcapping, Qwen2's sliding layers, GPT-2's per-layer scale, GPT-J's full rotary).

The tiny models here have larger weights than a fresh initialization (2-D weights x 6, noise on biases and
norm weights), so that their attention maps are far from uniform and every step matters: leaving out a
position step or a norm is caught."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

from explorer.analyses import scratch
from explorer.models import anatomy
from tests.conftest import (
    ARCHITECTURES,
    FAMILIES,
    MODEL_CLASSES,
    VOCAB,
    load_as_folder,
    tiny_config,
)

# 18 tokens: longer than the sliding windows of the tiny Mistral and Gemma 3 (4 tokens)
TEXT = "the cat sat on the mat because it was tired and then the dog ran to the park"


def gemma2_config():
    """Not in ARCHITECTURES (its anatomy is discovered): the one family here whose code applies a softcap."""
    return tf.Gemma2Config(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
        sliding_window=4, query_pre_attn_scalar=16, attn_logit_softcapping=1.0,
    )  # fmt: skip


VARIANTS = {  # name -> (kind, config changes)
    "gemma2": ("gemma2", {}),
    "falcon-alibi": ("falcon", dict(alibi=True)),
    "falcon-grouped": ("falcon", dict(new_decoder_architecture=True, num_kv_heads=2)),
    "phi-qk-norm": ("phi", dict(qk_layernorm=True)),
    "gemma3-softcap": ("gemma3_text", dict(attn_logit_softcapping=5.0)),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=4,
                                   layer_types=["full_attention", "sliding_attention"])),
    "gpt2-layer-scale": ("gpt2", dict(scale_attn_by_inverse_layer_idx=True)),
    "gptj-full-rotary": ("gptj", dict(rotary_dim=8)),
}  # fmt: skip
MODELS = ARCHITECTURES + tuple(VARIANTS)


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    """name (a kind or a VARIANTS key) -> a LoadedModel of a tiny checkpoint with sharp attention."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            kind, extra = VARIANTS.get(name, (name, {}))
            config = gemma2_config() if kind == "gemma2" else tiny_config(kind)
            if extra:
                config = type(config)(**{**config.to_dict(), **extra})
            torch.manual_seed(0)
            model = getattr(tf, MODEL_CLASSES.get(kind, "Gemma2ForCausalLM"))(config)
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() >= 2:
                        p.mul_(6.0)
                    else:  # biases and norm weights: away from their zero / one start
                        p.add_(torch.randn_like(p) * 0.3)
            made[name] = load_as_folder(model, tmp_path_factory.mktemp(f"sharp-{name}"))
        return made[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_every_head_matches_the_model(sharp, name):
    lm = sharp(name)
    a = anatomy.of(lm.model)
    caps = scratch.capture(lm, TEXT)
    family = FAMILIES.get(VARIANTS.get(name, (name,))[0], "decoder")
    assert tuple(caps) == {"encoder-decoder": ("encoder", "decoder", "cross")}.get(family, (family,))
    for kind, cap in caps.items():
        rows = scratch.max_differences(lm.model, cap)
        assert len(rows) == a.n_layers("decoder" if kind == "cross" else kind)
        for layer, row in enumerate(rows):
            assert len(row) == a.attention(kind, layer).n_heads
            assert max(row) <= 1e-5, (kind, layer, row)
        # not a vacuous match: the maps are far from uniform over the keys each query sees
        maps = cap.attentions[-1].float()
        seen = maps > 0
        uniform = seen / seen.sum(-1, keepdim=True)
        assert (maps - uniform).abs().max() > 0.02, kind


def _skip(monkeypatch, step: str) -> None:
    """Leaves one step out of the computation."""
    same = lambda x, *args: x  # noqa: E731
    if step == "rotation":
        monkeypatch.setattr(scratch, "rotate", same)
        monkeypatch.setattr(scratch, "rotate_pairs", same)
    elif step == "norm":
        monkeypatch.setattr(scratch, "apply_norm", same)
    elif step == "softcap":
        monkeypatch.setattr(scratch, "_softcap", lambda module: None)
    elif step == "window":
        monkeypatch.setattr(scratch, "sliding_window", lambda *args: None)
    elif step == "relative":
        monkeypatch.setattr(scratch, "t5_bias", lambda model, stack, n_q, n_k: torch.zeros(1, n_q, n_k))
    elif step == "alibi":
        real = scratch.alibi
        monkeypatch.setattr(
            scratch, "alibi", lambda *args: (real(*args)[0], torch.zeros_like(real(*args)[1]))
        )


@pytest.mark.parametrize(
    "name, step",
    [(k, "rotation") for k in ("llama", "gpt_neox", "phi", "gptj", "falcon", "gemma3_text", "phi3", "olmo2")]
    + [(k, "norm") for k in ("qwen3", "olmo2", "gemma3_text", "phi-qk-norm")]
    + [(k, "window") for k in ("mistral", "gemma3_text", "qwen2-window", "gemma2")]
    + [("t5", "relative"), ("bloom", "alibi"), ("falcon-alibi", "alibi"), ("gemma2", "softcap")],
)
def test_leaving_out_a_step_is_caught(sharp, monkeypatch, name, step):
    lm = sharp(name)
    assert scratch.verify(lm, TEXT)["ok"]
    _skip(monkeypatch, step)
    result = scratch.verify(lm, TEXT)
    assert not result["ok"] and result["max_abs_diff"] > 1e-3


def test_partial_and_interleaved_rotary(sharp):
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

    for name, rotated in (("gpt_neox", 2), ("phi", 4), ("gptj", 4), ("gptj-full-rotary", 8)):
        lm = sharp(name)
        cap = scratch.capture(lm, TEXT)["decoder"]
        m = scratch.heads_from_scratch(lm.model, "decoder", 1, cap.inputs[1])
        assert m.rotary_dim == rotated and m.interleaved == name.startswith("gptj")
        assert torch.equal(m.q_rot[..., rotated:], m.q[..., rotated:])  # the rest of each head passes
        assert not torch.allclose(m.q_rot[..., 1:, :rotated], m.q[..., 1:, :rotated])
    # GPT-J's own rotation, from its sin/cos table
    sin, cos = lm.model.transformer.rotary_emb(cap.inputs[1][None], torch.arange(len(cap.ids))[None])
    ref = apply_rotary_pos_emb(m.q.transpose(0, 1)[None], sin, cos)[0].transpose(0, 1)
    torch.testing.assert_close(m.q_rot, ref, atol=1e-6, rtol=0)


def test_alibi_slopes_and_bias(sharp):
    """Four heads: slopes 2^-2, 2^-4, 2^-6, 2^-8 (the paper's geometric sequence); Bloom adds m_h * j to
    the scaled scores, Falcon's code adds it twice, scaled."""
    bloom = sharp("bloom")
    cap = scratch.capture(bloom, TEXT)["decoder"]
    m = scratch.heads_from_scratch(bloom.model, "decoder", 0, cap.inputs[0])
    assert m.bias_kind == "alibi" and m.bias_factor == 1.0
    assert m.slopes.tolist() == [2**-2, 2**-4, 2**-6, 2**-8]
    j = torch.arange(len(cap.ids)).float()
    torch.testing.assert_close(m.bias[:, 3], m.slopes[:, None] * j)
    falcon = sharp("falcon-alibi")
    cap = scratch.capture(falcon, TEXT)["decoder"]
    m = scratch.heads_from_scratch(falcon.model, "decoder", 0, cap.inputs[0])
    assert m.bias_factor == pytest.approx(2 * 8**-0.5)


def test_relative_bias_only_in_self_attention_and_shared(sharp):
    lm = sharp("t5")
    caps = scratch.capture(lm, TEXT)
    for kind, cap in caps.items():
        kv = cap.kv_inputs if kind == "cross" else [None] * cap.n_layers
        ms = [
            scratch.heads_from_scratch(lm.model, kind, i, cap.inputs[i], kv=kv[i])
            for i in range(cap.n_layers)
        ]
        if kind == "cross":
            assert all(m.bias is None for m in ms)
        else:
            assert all(torch.equal(m.bias, ms[0].bias) for m in ms)


def test_scales_are_the_modules_own(sharp):
    gpt2 = sharp("gpt2-layer-scale")
    cap = scratch.capture(gpt2, TEXT)["decoder"]
    m = scratch.heads_from_scratch(gpt2.model, "decoder", 1, cap.inputs[1])
    assert m.scale == pytest.approx(8**-0.5 / 2) and m.scale_text == r"1/\sqrt{32}"
    gemma = sharp("gemma2")
    cap = scratch.capture(gemma, TEXT)["decoder"]
    m = scratch.heads_from_scratch(gemma.model, "decoder", 0, cap.inputs[0])
    assert m.scale_text == r"1/\sqrt{16}" and m.softcap == 1.0 and m.logits.abs().max() <= 1.0
    # Gemma 3 keeps attn_logit_softcapping from its config, but its code does not apply it
    gemma3 = sharp("gemma3-softcap")
    assert gemma3.model.model.layers[0].self_attn.attn_logit_softcapping == 5.0
    cap = scratch.capture(gemma3, TEXT)["decoder"]
    assert scratch.heads_from_scratch(gemma3.model, "decoder", 0, cap.inputs[0]).softcap is None


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_verify_command(tiny_dir, capsys, kind):
    from explorer import __main__ as cli

    assert cli.main(["verify", str(tiny_dir(kind)), "--text", TEXT]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["max_abs_diff"] <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_the_page_steps_on_every_architecture(sharp, name):
    """The walkthrough the page shows: every kind of attention, its last layer, its last head."""
    from explorer.analyses.scratch_steps import walkthrough

    lm = sharp(name)
    a = anatomy.of(lm.model)
    for kind, cap in scratch.capture(lm, TEXT).items():
        layer = cap.n_layers - 1
        walk = walkthrough(lm.model, cap, layer, a.attention(kind, layer).n_heads - 1)
        assert walk.ok, (kind, walk.max_abs_diff)
        titles = [s.title for s in walk.steps]
        assert titles[0].startswith("Layer input") and titles[-1].startswith("Head output")
        assert ("Q rotated by position" in titles) == (a.position == "rope" and kind != "cross")
        bias = a.position in ("alibi", "relative") and kind != "cross"
        assert ("Scores plus bias" in titles) == bias
        assert all(s.values.ndim == 2 and s.latex for s in walk.steps)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_positions_page_data_on_every_architecture(tiny_loaded, kind):
    from explorer.analyses import positions

    model = tiny_loaded(kind).model
    a = anatomy.of(model)
    if a.position not in ("learned", "rope", "relative"):
        with pytest.raises(anatomy.UnsupportedModel, match="sinusoidal table|ALiBi"):
            positions.scheme(model)
        return
    scheme = positions.scheme(model)
    if scheme == positions.LEARNED:
        table, offset = positions.learned_table(model)
        assert table.shape[1] == model.get_input_embeddings().weight.shape[1]  # added to the embeddings
        assert table.shape[0] >= 64 and offset in (0, 1, 2)
    elif scheme == positions.ROTARY:
        sets = positions.rotary_sets(model)
        assert all(len(s.inv_freq) == a.rotary_dim // 2 for s in sets)
        assert sorted(i for s in sets for i in s.layers) == list(range(a.n_layers("decoder")))
    else:
        for stack in a.stack_names:
            assert positions.t5_relative(model, stack, reach=10).bias.shape == (4, 21)
