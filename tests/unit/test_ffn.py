"""FFN memory: neuron activations computed from the weights equal what the model's down projection reads;
the residual updates add up to the change of the hidden state; promoted tokens are W_U applied to the
neuron's output vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

from explorer.analyses import ffn
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.loading import LoadRequest, load_model
from explorer.runs import hooked
from tests.unit.test_scratch import TEXT, gemma_config

KINDS = ["bert", "gpt2", "llama", "t5", "bart"]


@pytest.fixture(scope="module")
def loaded(tiny_loaded, tmp_path_factory):
    cache = {}

    def get(kind):
        if kind not in cache:
            if kind == "gemma3":
                from tests.conftest import tiny_tokenizer

                torch.manual_seed(0)
                model = tf.Gemma3ForCausalLM(gemma_config())
                for name, p in model.named_parameters():
                    if "norm" in name:
                        p.data.normal_(0, 0.5)
                folder = tmp_path_factory.mktemp("tiny-gemma3-ffn")
                model.save_pretrained(folder)
                tiny_tokenizer().save_pretrained(folder)
            else:
                return tiny_loaded(kind)
            cache[kind] = load_model(LoadRequest("folder", str(folder)))
        return cache[kind]

    return get


def _down_inputs(lm, stack, text=TEXT):
    """What a forward pre-hook on each layer's down projection reads (the reference)."""
    model = lm.model
    seen = {}
    handles = []
    for i, block in enumerate(anatomy.of(model).blocks(stack)):
        down = block.ffn.down

        def hook(module, args, i=i):
            seen[i] = args[0][0].detach()

        handles.append(down.register_forward_pre_hook(hook))
    ids = hooked.encode(model, lm.tokenizer, text)
    try:
        with torch.no_grad():
            out = model(**hooked.inputs(model, ids), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return seen, out


@pytest.mark.parametrize("kind", KINDS + ["gemma3"])
def test_activations_equal_the_down_projection_input(kind, loaded):
    lm = loaded(kind)
    reference, _ = _down_inputs(lm, ffn.ffn_stack(lm.model))
    before = hooks(lm.model)  # transformers keeps hooks of its own for output_hidden_states
    cap = ffn.capture(lm, TEXT)
    assert hooks(lm.model) == before  # none of ours is left on the shared model
    for layer in range(cap.n_layers):
        ours = ffn.activations(lm.model, cap.stack, layer, cap.inputs[layer])
        assert ours.shape == reference[layer].shape
        assert torch.allclose(ours, reference[layer], atol=1e-5), (kind, layer)


def hooks(model) -> dict[str, tuple]:
    return {n: (tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for n, m in model.named_modules()}


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma3"])
def test_updates_add_up_to_the_residual_change(kind, loaded):
    """Pre-norm decoders: h_{l+1} - h_l = attention update + FFN update, so their norms bound the change."""
    lm = loaded(kind)
    cap = ffn.capture(lm, TEXT)
    _, out = _down_inputs(lm, cap.stack)
    hs = out.hidden_states
    for layer in range(cap.n_layers - 1):  # the last hidden state has the final norm applied
        change = (hs[layer + 1][0] - hs[layer][0]).norm(dim=-1).numpy()
        a, f = cap.attn_norms[layer], cap.ffn_norms[layer]
        assert ((change <= a + f + 1e-4) & (change >= abs(a - f) - 1e-4)).all()
        assert (a > 0).all() and (f > 0).all()


def test_promoted_tokens_are_the_unembedding_of_the_output_vector(loaded):
    lm = loaded("llama")
    model = lm.model
    vec = ffn.out_vectors(model, "decoder", 1, [3, 7])
    assert torch.equal(vec[0], model.model.layers[1].mlp.down_proj.weight[:, 3])
    top, ids, low, low_ids = ffn.promoted(model, vec, k=5, through_norm=True)
    logits = model.lm_head.weight @ (model.model.norm.weight * vec[1])
    assert torch.allclose(top[1], logits.topk(5).values, atol=1e-5)
    assert torch.equal(ids[1], logits.topk(5).indices)
    assert (low[1] <= top[1].min()).all()
    plain, _, _, _ = ffn.promoted(model, vec, k=5, through_norm=False)
    assert torch.allclose(plain[0], (model.lm_head.weight @ vec[0]).topk(5).values, atol=1e-5)


def test_the_neurons_that_push_a_token_are_ranked_by_activation_times_their_logit(loaded):
    lm = loaded("llama")
    model = lm.model
    acts = torch.randn(model.config.intermediate_size, generator=torch.Generator().manual_seed(0))
    found = ffn.pushers(model, "decoder", 1, 5, acts, k=4)
    w_out = model.model.layers[1].mlp.down_proj.weight  # (d_model, d_ff): column n is neuron n's output
    per_unit = (model.lm_head.weight[5] * model.model.norm.weight) @ w_out  # (d_ff,)
    effects = acts * per_unit
    assert found.neurons.tolist() == effects.topk(4).indices.tolist()
    assert np.allclose(found.effects, effects.topk(4).values.detach().numpy(), atol=1e-5)
    assert np.allclose(found.activations * found.per_unit, found.effects, atol=1e-6)


def test_gpt2_output_vectors_are_rows_of_conv1d(loaded):
    model = loaded("gpt2").model
    vec = ffn.out_vectors(model, "decoder", 0, [2])
    assert torch.equal(vec[0], model.transformer.h[0].mlp.c_proj.weight[2])
    assert ffn.can_unembed(model) and not ffn.can_unembed(loaded("bert").model)


def test_empty_text(loaded):
    with pytest.raises(InputError):
        ffn.capture(loaded("llama"), " ")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_embedded_activations(name):
    lm = load_model(LoadRequest("embedded", name))
    cap = ffn.capture(lm, "The capital of France is Paris.")
    reference, _ = _down_inputs(lm, "decoder", "The capital of France is Paris.")
    for layer in (0, cap.n_layers // 2, cap.n_layers - 1):
        ours = ffn.activations(lm.model, "decoder", layer, cap.inputs[layer])
        assert torch.allclose(ours, reference[layer], atol=1e-5, rtol=1e-5)


def test_one_layer_capture(loaded):
    lm = loaded("llama")
    full, one = ffn.capture(lm, TEXT), ffn.capture(lm, TEXT, layer=1)
    assert one.inputs[0] is None and torch.equal(one.inputs[1], full.inputs[1])
    assert (one.attn_norms == full.attn_norms).all() and (one.ffn_norms == full.ffn_norms).all()
