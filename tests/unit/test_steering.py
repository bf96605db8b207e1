"""Steering: the vector is the contrast of the prompts' residual streams (checked against a plain forward
pass's hidden states), coefficient 0 is bit-identical to no steering, and a steered pass equals the model
run with the vector added by a plain PyTorch hook."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.__main__ import main as cli
from explorer.analyses import steering
from explorer.errors import InputError
from explorer.runs.stepping import Settings, Stepper

PROMPT = "the cat sat on the"
LAYER = 1


def stream(loaded, text: str) -> torch.Tensor:
    """The mean of hidden_states[LAYER] (the input of block LAYER) over the text's tokens, read after
    the start token, from a plain forward pass."""
    tok = loaded.tokenizer
    ids = [tok.bos_token_id] + tok(text)["input_ids"]
    with torch.no_grad():
        hidden = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    return hidden[LAYER][0, 1:].mean(0)


def test_the_vector_is_the_contrast_of_the_streams(tiny_loaded):
    loaded = tiny_loaded("llama")
    s = steering.build(loaded, ["the dog ran", "a dog slept"], ["the cat sat"], LAYER, 2.0)
    want = (stream(loaded, "the dog ran") + stream(loaded, "a dog slept")) / 2 - stream(loaded, "the cat sat")
    assert torch.allclose(s.vector, want, atol=1e-6)


def test_coefficient_zero_is_bit_identical(tiny_loaded):
    loaded = tiny_loaded("llama")
    zero = steering.build(loaded, ["the dog ran"], ["the cat sat"], LAYER, 0.0)
    plain, steered = Stepper.start(loaded, PROMPT), Stepper.start(loaded, PROMPT, steer=zero)
    for _ in range(4):
        assert torch.equal(plain._state.logits, steered._state.logits)
        assert plain.step(Settings()).token_id == steered.step(Settings()).token_id


def test_a_steered_pass_adds_the_vector_at_the_layer(tiny_loaded):
    loaded = tiny_loaded("llama")
    s = steering.build(loaded, ["the dog ran"], ["the cat sat"], LAYER, 3.0)
    steered = Stepper.start(loaded, PROMPT, steer=s)
    block = loaded.model.model.layers[LAYER]

    def add(module, args, kwargs):
        if args:
            return (args[0] + 3.0 * s.vector,) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + 3.0 * s.vector}

    handle = block.register_forward_pre_hook(add, with_kwargs=True)
    try:
        with torch.no_grad():
            want = loaded.model(input_ids=torch.tensor([steered.prompt_ids])).logits[0, -1]
    finally:
        handle.remove()
    assert torch.allclose(steered._state.logits, want, atol=1e-5)
    assert not torch.allclose(steered.unsteered().log(), torch.log_softmax(want, -1), atol=1e-3)


def test_an_encoder_decoder_is_steered_in_its_encoder(tiny_loaded):
    """The vector is the contrast of the encoder's streams (its own hidden states); a steered step equals
    the model with the vector added to the encoder's layer by a plain hook; coefficient 0 changes nothing,
    and the unsteered numbers beside are the model's without the hook."""
    loaded = tiny_loaded("t5")
    model, tok = loaded.model, loaded.tokenizer

    def enc_stream(text):
        with torch.no_grad():
            hidden = model.get_encoder()(input_ids=torch.tensor([tok(text)["input_ids"]]),
                                         output_hidden_states=True).hidden_states  # fmt: skip
        return hidden[LAYER][0].mean(0)

    s = steering.build(loaded, ["the dog ran"], ["the cat sat"], LAYER, 3.0)
    assert s.stack == "encoder"
    assert torch.allclose(s.vector, enc_stream("the dog ran") - enc_stream("the cat sat"), atol=1e-6)
    steered = Stepper.start(loaded, "the", source=PROMPT, steer=s)
    block = model.encoder.block[LAYER]
    handle = block.register_forward_pre_hook(lambda m, args: (args[0] + 3.0 * s.vector,) + args[1:])
    src, dec = torch.tensor([tok(PROMPT)["input_ids"]]), torch.tensor([steered.prompt_ids])
    try:
        with torch.no_grad():
            want = model(input_ids=src, decoder_input_ids=dec).logits[0, -1]
    finally:
        handle.remove()
    assert torch.allclose(steered._state.logits, want, atol=1e-5)
    with torch.no_grad():
        plain = torch.softmax(model(input_ids=src, decoder_input_ids=dec).logits[0, -1], -1)
    assert torch.allclose(steered.unsteered(), plain, atol=1e-6)
    zero = steering.build(loaded, ["the dog ran"], ["the cat sat"], LAYER, 0.0)
    a, b = (
        Stepper.start(loaded, "the", source=PROMPT),
        Stepper.start(loaded, "the", source=PROMPT, steer=zero),
    )
    for _ in range(3):
        assert torch.equal(a._state.logits, b._state.logits)
        assert a.step(Settings()).token_id == b.step(Settings()).token_id


def test_only_models_that_write_are_steered(tiny_loaded):
    with pytest.raises(InputError, match="decoder"):
        steering.build(tiny_loaded("bert"), ["the dog"], ["the cat"], 0, 1.0)
    with pytest.raises(InputError, match="between 0 and 1"):
        steering.build(tiny_loaded("llama"), ["the dog"], ["the cat"], 5, 1.0)


def test_the_command_shows_the_unsteered_step_beside(tiny_dir, capsys):
    args = ["generate", str(tiny_dir("llama")), "--prompt", PROMPT, "--steps", "3", "--steer-plus",
            "the dog ran", "--steer-minus", "the cat sat", "--steer-layer", "1", "--steer-coef", "0",
            "--json"]  # fmt: skip
    assert cli(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3
    for row in rows:  # coefficient 0: the same distribution
        assert row["unsteered_prob"] == pytest.approx(row["prob"], abs=1e-6)
        assert row["unsteered_top"][0]["token_id"] == row["top"][0]["token_id"]
