"""Attention from scratch equals the model's own attention maps, for every family decomposed."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from explorer.analyses import scratch
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.loading import LoadRequest, load_model
from explorer.runs import hooked
from tests.conftest import VOCAB, tiny_tokenizer

TEXT = "the cat sat on the mat because it was tired and then the dog ran to the park"
KINDS = ["bert", "gpt2", "llama", "t5", "bart"]


def gemma_config(**extra):
    """Tiny Gemma 3 text model: q/k norms, multi-query, a window of 3 on two layers of three, its own
    query_pre_attn_scalar (not the head size), two rope thetas."""
    return tf.Gemma3TextConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=3, head_dim=8,
        num_attention_heads=4, num_key_value_heads=1, sliding_window=3, query_pre_attn_scalar=20,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=128, **extra,
    )  # fmt: skip


def qwen_config():
    """Tiny Qwen2: Llama-style with biases on q, k and v; a window of 4 on its second layer only."""
    return tf.Qwen2Config(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        use_sliding_window=True, sliding_window=4, max_window_layers=1,
    )  # fmt: skip


def mistral_config():
    """Tiny Mistral: a window of 3 on every layer."""
    return tf.MistralConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, sliding_window=3,
    )  # fmt: skip


def _save(model, folder):
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(tiny_loaded, tmp_path_factory):
    cache = {}

    def get(kind):
        if kind not in cache:
            if kind == "gemma3":
                torch.manual_seed(0)
                model = tf.Gemma3ForCausalLM(gemma_config())
                # Gemma's norm weights start at zero; random ones make the q/k norm step matter.
                for name, p in model.named_parameters():
                    if "norm" in name:
                        p.data.normal_(0, 0.5)
                folder = _save(model, tmp_path_factory.mktemp("tiny-gemma3"))
            elif kind == "mistral":
                torch.manual_seed(0)
                model = tf.MistralForCausalLM(mistral_config())
                folder = _save(model, tmp_path_factory.mktemp("tiny-mistral"))
            elif kind == "qwen2":
                torch.manual_seed(0)
                model = tf.Qwen2ForCausalLM(qwen_config())
                for name, p in model.named_parameters():
                    if name.endswith("bias"):
                        p.data.normal_(0, 0.5)
                folder = _save(model, tmp_path_factory.mktemp("tiny-qwen2"))
            else:
                return tiny_loaded(kind)
            cache[kind] = load_model(LoadRequest("folder", str(folder)))
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", KINDS + ["gemma3", "qwen2", "mistral"])
def test_every_head_matches_the_model(kind, loaded):
    lm = loaded(kind)
    result = scratch.verify(lm, TEXT)
    assert result["tolerance"] == 1e-5
    rows = result["per_layer"] if "per_layer" in result else sum(result["per_stack"].values(), [])
    assert all(d <= 1e-5 for row in rows for d in row), rows
    assert result["ok"] and result["max_abs_diff"] <= 1e-5
    heads = lm.model.config.num_attention_heads if kind != "t5" else lm.model.config.num_heads
    assert all(len(row) == heads for row in rows)


@pytest.mark.parametrize("kind", KINDS + ["gemma3"])
def test_steps_are_consistent(kind, loaded):
    """The intermediates obey their formulas: rows of A sum to 1, masked entries are 0, O = A V."""
    lm = loaded(kind)
    caps = scratch.capture(lm, TEXT)
    for stack, cap in caps.items():
        kv = cap.kv_inputs[-1] if stack == "cross" else None
        m = scratch.heads_from_scratch(lm.model, stack, cap.n_layers - 1, cap.inputs[-1], kv=kv)
        n = len(cap.ids)
        assert m.x.shape == (n, lm.model.config.d_model if kind == "t5" else lm.model.config.hidden_size)
        assert torch.allclose(m.probs.sum(-1), torch.ones(m.probs.shape[:2]), atol=1e-5)
        assert (m.probs[:, ~m.allowed] == 0).all()
        assert torch.allclose(m.out, m.probs @ m.v.repeat_interleave(m.n_rep, 0), atol=1e-6)
        if stack != "cross" and anatomy.of(lm.model).stacks[stack].causal:
            assert not m.allowed.triu(1).any()
        else:
            assert m.allowed.all()


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_cross_attention(kind, loaded):
    """Decoder queries on encoder keys: (tgt, src) maps equal to the model's cross_attentions."""
    lm = loaded(kind)
    caps = scratch.capture(lm, TEXT)
    cross, enc = caps["cross"], caps["encoder"]
    assert cross.key_tokens == enc.tokens and cross.tokens == caps["decoder"].tokens
    for layer in range(cross.n_layers):
        m = scratch.heads_from_scratch(
            lm.model, "cross", layer, cross.inputs[layer], kv=cross.kv_inputs[layer]
        )
        assert m.probs.shape[1:] == (len(cross.ids), len(enc.ids)) and m.k.shape[1] == len(enc.ids)
        assert m.bias is None and m.allowed.all()
        assert torch.allclose(m.probs, cross.attentions[layer].float(), atol=1e-5)
    # the encoder's output is what every cross-attention layer reads
    assert torch.equal(cross.kv_inputs[0], cross.kv_inputs[-1])


def test_grouped_query_heads_share_keys(loaded):
    lm = loaded("llama")  # 4 query heads on 2 key/value heads
    cap = scratch.capture(lm, TEXT)["decoder"]
    m = scratch.heads_from_scratch(lm.model, "decoder", 0, cap.inputs[0])
    assert m.q.shape[0] == 4 and m.k.shape[0] == 2 and m.n_rep == 2
    assert m.q_rot is not None and not torch.allclose(m.q_rot, m.q)  # the rotation changed q
    assert torch.allclose(m.q_rot[:, 0], m.q[:, 0])  # position 0 turns by angle 0


def test_rotation_matches_transformers(loaded):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    lm = loaded("llama")
    cap = scratch.capture(lm, TEXT)["decoder"]
    m = scratch.heads_from_scratch(lm.model, "decoder", 1, cap.inputs[1])
    pos = torch.arange(len(cap.ids))[None]
    cos, sin = lm.model.model.rotary_emb(cap.inputs[1][None], pos)
    q_ref, k_ref = apply_rotary_pos_emb(m.q[None], m.k[None], cos, sin)
    assert torch.allclose(m.cos, cos[0], atol=1e-6)
    assert torch.allclose(m.q_rot, q_ref[0], atol=1e-6) and torch.allclose(m.k_rot, k_ref[0], atol=1e-6)


def test_windows_of_qwen2_and_mistral(loaded):
    qwen, mistral = loaded("qwen2").model, loaded("mistral").model
    assert [scratch.sliding_window(qwen, i, "decoder") for i in range(2)] == [None, 4]
    assert [scratch.sliding_window(mistral, i, "decoder") for i in range(2)] == [3, 3]


def test_gemma_window_norms_and_scale(loaded):
    lm = loaded("gemma3")
    cap = scratch.capture(lm, TEXT)["decoder"]
    sliding = scratch.heads_from_scratch(lm.model, "decoder", 0, cap.inputs[0])
    full = scratch.heads_from_scratch(lm.model, "decoder", 2, cap.inputs[2])
    assert sliding.window == 3 and full.window is None
    assert sliding.allowed.sum(-1).max() == 3  # each query sees itself and the two before
    assert full.allowed.sum(-1).tolist() == list(range(1, len(cap.ids) + 1))
    assert sliding.scale == pytest.approx(20**-0.5)
    assert sliding.q_normed is not None
    # The sliding and the full layers rotate with their own theta
    assert not torch.allclose(sliding.cos, full.cos)


def test_t5_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        ours = scratch.relative_buckets(rel, bidirectional, 32, 128)
        ref = T5Attention._relative_position_bucket(rel, bidirectional, 32, 128)
        assert torch.equal(ours, ref)


def test_padding_mask(loaded):
    """Left padding: padded keys get no attention, as in the model's own maps."""
    lm = loaded("llama")
    model = lm.model
    ids = hooked.encode(model, lm.tokenizer, "the cat sat on the mat")
    pad = lm.tokenizer.pad_token_id
    x = torch.tensor([[pad, pad] + ids])
    mask = torch.tensor([[0, 0] + [1] * len(ids)])
    seen = {}
    keep = hooked.keep(seen, "x", anatomy.of(model).attention("decoder", 1).module, "pre")
    out = hooked.run(lm, {"input_ids": x, "attention_mask": mask}, [keep], output_attentions=True)
    # Positions count from the first token, padding included, as in the model's forward without position_ids.
    m = scratch.heads_from_scratch(model, "decoder", 1, seen["x"], keep=mask[0])
    real = slice(2, None)
    assert (m.probs[:, real, :2] == 0).all()
    assert torch.allclose(m.probs[:, real], out.attentions[1][0][:, real], atol=1e-5)


def test_hooks_are_removed(loaded):
    lm = loaded("gpt2")
    scratch.capture(lm, TEXT)  # transformers adds hooks of its own for output_attentions on a first call
    before = {n: (tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for n, m in lm.model.named_modules()}
    scratch.capture(lm, TEXT)
    after = {n: (tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for n, m in lm.model.named_modules()}
    assert after == before
    assert not any(m._forward_pre_hooks for m in lm.model.modules())


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text(text, loaded):
    with pytest.raises(InputError, match="empty"):
        scratch.capture(loaded("gpt2"), text)


def test_text_longer_than_the_context(loaded):
    lm = loaded("bert")  # 64 positions
    with pytest.raises(InputError, match="at most 64"):
        scratch.capture(lm, " ".join(["cat"] * 80))


def test_unsupported_family_says_so():
    model = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=50, d_model=32, n_layer=1, n_head=4, d_inner=64))
    with pytest.raises(anatomy.UnsupportedModel, match="model type 'xlnet'"):
        anatomy.of(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m", "all-minilm-l6-v2"])
def test_embedded_models_match(name):
    lm = load_model(LoadRequest("embedded", name))
    text = "The Eiffel Tower is in Paris, and the Colosseum is in Rome. " * 3
    result = scratch.verify(lm, text)
    assert result["ok"], result["max_abs_diff"]
    assert result["max_abs_diff"] <= 1e-5
    assert len(result["per_layer"]) == lm.card.n_layers
    assert all(len(row) == lm.card.n_heads for row in result["per_layer"])


def test_a_wrong_step_is_caught(loaded, monkeypatch):
    """The comparison is not vacuous: leaving out the rotation, or using 1/sqrt(d_head) where Gemma uses
    its query_pre_attn_scalar, fails the check."""
    lm = loaded("llama")
    monkeypatch.setattr(scratch, "rotate", lambda x, cos, sin: x)
    result = scratch.verify(lm, TEXT)
    assert not result["ok"] and result["max_abs_diff"] > 1e-3
    monkeypatch.undo()
    monkeypatch.setattr(scratch, "_scale", lambda att: (att.d_head**-0.5, ""))
    assert not scratch.verify(loaded("gemma3"), TEXT)["ok"]


def test_verify_command(tiny_dir, capsys):
    import json

    from explorer import __main__ as cli

    assert cli.main(["verify", str(tiny_dir("t5")), "--text", TEXT]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["tolerance"] == 1e-5 and result["max_abs_diff"] <= 1e-5
    assert {stack: len(rows) for stack, rows in result["per_stack"].items()} == {
        "encoder": 2, "decoder": 3, "cross": 3,
    }  # fmt: skip
    assert cli.main(["verify", str(tiny_dir("gpt2")), "--text", ""]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The text is empty") and err.count("\n") == 1


def test_verify_command_fails_on_a_mismatch(tiny_dir, capsys, monkeypatch):
    import json

    from explorer import __main__ as cli

    monkeypatch.setattr(scratch, "rotate", lambda x, cos, sin: x)
    assert cli.main(["verify", str(tiny_dir("llama")), "--text", TEXT]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_half_precision_models_get_a_half_precision_tolerance(tiny_dir):
    assert scratch.tolerance(torch.float32) == 1e-5
    assert scratch.tolerance(torch.bfloat16) == pytest.approx(8 * 2**-7)
    lm = load_model(LoadRequest("folder", str(tiny_dir("llama")), dtype="bfloat16"))
    result = scratch.verify(lm, TEXT)
    assert result["tolerance"] == pytest.approx(0.0625)
    assert 0 < result["max_abs_diff"] <= result["tolerance"] and result["ok"]


def test_one_layer_capture_keeps_only_that_layer(loaded):
    lm = loaded("llama")
    full = scratch.capture(lm, TEXT)["decoder"]
    one = scratch.capture(lm, TEXT, layer=1)["decoder"]
    assert one.inputs[0] is None and one.attentions[0] is None
    assert torch.equal(one.inputs[1], full.inputs[1]) and torch.equal(one.attentions[1], full.attentions[1])
