"""FFN memory on every architecture: the neurons times their output vectors add up to what the down
projection returned; neurons recomputed from the FFN input equal what the down projection read; promoted
tokens are W_U (gamma * w) with gamma read from the final norm the model really applies."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from explorer.analyses import ffn, hidden
from explorer.models import anatomy
from explorer.runs import hooked
from tests.conftest import ARCHITECTURES, FAMILIES, MODEL_CLASSES, no_hooks, tiny_config

TEXT = "the cat sat on the mat because it was tired"
# The norm each decoder applies before its LM head, by its path in the modeling code (None: post-norm).
FINAL_NORM = {
    "gpt2": "transformer.ln_f", "bloom": "transformer.ln_f", "gptj": "transformer.ln_f",
    "falcon": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm",
    "opt": "model.decoder.final_layer_norm", "phi": "model.final_layernorm", "t5": "decoder.final_layer_norm",
    "mbart": "model.decoder.layer_norm", "bart": None, "marian": None, "gpt_bigcode": "transformer.ln_f",
    "biogpt": "biogpt.layer_norm", "pegasus": "model.decoder.layer_norm",
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "gemma3_text", "gemma2", "cohere",
                     "starcoder2"), "model.norm"),
}  # fmt: skip


def _module(model, path: str | None):
    found = model
    for name in path.split(".") if path else ():
        found = getattr(found, name)
    return found if path else None


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_neurons_times_output_vectors_add_up_to_the_down_projection(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    model, a = loaded.model, anatomy.of(loaded.model)
    stack = a.stacks[ffn.ffn_stack(model)]
    seen: dict = {}
    hooks = []
    for b in stack.blocks:
        call = b.index if stack.shared_blocks else None
        hooks.append(hooked.keep(seen, b.index, b.ffn.down, "post", call, batch_row=None))
    ids = hooked.encode(model, loaded.tokenizer, TEXT)
    hooked.run(loaded, hooked.inputs(model, ids), hooks, **hooked.options(model))
    cap = ffn.capture(loaded, TEXT)
    assert no_hooks(model)
    for b in stack.blocks:
        acts = cap.activations[b.index]  # (pos, d_ff)
        w = ffn.out_vectors(model, stack.name, b.index, list(range(acts.shape[1])))  # (d_ff, d_model)
        bias = anatomy.Proj(b.ffn.down).bias()
        total = acts @ w + (0 if bias is None else bias.float())  # (pos, d_model)
        out = seen[b.index].reshape(-1, total.shape[-1]).float()  # OPT flattens (batch, pos)
        torch.testing.assert_close(total, out, atol=1e-4, rtol=1e-4)
        assert (cap.ffn_norms[b.index] > 0).all() and (cap.attn_norms[b.index] > 0).all()
    if stack.shared_blocks:  # one module, called once per layer: each layer kept its own call
        assert not torch.equal(cap.inputs[0], cap.inputs[1])


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_activations_from_the_ffn_input_equal_the_down_projection_input(tiny_loaded, kind):
    loaded = tiny_loaded(kind)
    cap = ffn.capture(loaded, TEXT)
    assert len(cap.ids) == len(cap.tokens) == cap.inputs[0].shape[0]
    for layer in range(cap.n_layers):
        ours = ffn.activations(loaded.model, cap.stack, layer, cap.inputs[layer])
        torch.testing.assert_close(ours, cap.activations[layer], atol=1e-5, rtol=1e-5)
    one = ffn.capture(loaded, TEXT, layer=1)
    assert one.inputs[0] is None and one.activations[0] is None
    assert torch.equal(one.activations[1], cap.activations[1])
    gated = anatomy.of(loaded.model).blocks(cap.stack)[0].ffn.gated
    assert ("W_{gate}" in ffn.formula(loaded.model)) == gated


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_promoted_tokens_are_w_u_of_gamma_times_w(kind):
    torch.manual_seed(1)
    model = getattr(tf, MODEL_CLASSES[kind])(tiny_config(kind)).eval()
    assert ffn.can_unembed(model) == (FAMILIES[kind] != "encoder")
    assert hidden.final_norm(model) is _module(model, FINAL_NORM.get(kind))
    if not ffn.can_unembed(model):
        return
    norm = _module(model, FINAL_NORM[kind])
    if norm is not None:  # a scale far from 1 and a bias, so that a wrong gamma shows
        with torch.no_grad():
            norm.weight.normal_(0, 0.5)
            if getattr(norm, "bias", None) is not None:
                norm.bias.normal_(0, 0.5)
    vec = ffn.out_vectors(model, "decoder", 1, [0, 5])  # (2, d_model)
    w_u = model.get_output_embeddings().weight.detach()  # (vocab, d_model)
    scale = model.config.d_model**-0.5 if kind == "t5" else 1.0  # T5 scales the decoder output
    gamma, name = ffn.final_norm_scale(model)
    if norm is None:
        assert gamma is None
        expected = vec
    else:
        weight = norm.weight.detach()
        expected = vec * (1 + weight if kind in ("gemma3_text", "gemma2") else weight)  # Gemma stores w - 1
        x = torch.randn(3, weight.shape[0])
        with torch.no_grad():  # a LayerNorm takes out the mean (a shift changes nothing); an RMSNorm does not
            centres = torch.allclose(norm(x), norm(x + 3.0), atol=1e-4)
        assert ("LayerNorm" in name) == centres, name
    logits = scale * expected @ w_u.T  # (2, vocab)
    top, ids, low, low_ids = ffn.promoted(model, vec, k=5)
    torch.testing.assert_close(top, logits.topk(5).values, atol=1e-5, rtol=1e-5)
    assert torch.equal(ids, logits.topk(5).indices)
    assert torch.equal(low_ids, logits.topk(5, largest=False).indices)
    plain, _, _, _ = ffn.promoted(model, vec, k=5, through_norm=False)
    torch.testing.assert_close(plain, (scale * vec @ w_u.T).topk(5).values, atol=1e-5, rtol=1e-5)


def test_final_norm_of_a_model_the_anatomy_refuses_is_found_by_name():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = tf.PretrainedConfig()
            self.ln_f = torch.nn.LayerNorm(8)

        @property
        def base_model(self):
            return self

    model = Odd()
    with pytest.raises(anatomy.UnsupportedModel):
        anatomy.of(model)
    assert hidden.final_norm(model) is model.ln_f
