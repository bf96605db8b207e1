"""The stepper on the embedded SmolLM2 with its chat template (slow): greedy steps equal generate()."""

from __future__ import annotations

import pytest
import torch

from explorer.models.loading import LoadRequest, load_model
from explorer.runs.stepping import Settings, Stepper, templated

pytestmark = pytest.mark.slow


def test_smollm2_chat_greedy_reproduces_generate():
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    prompt = "What is the capital of France?"
    stepper = Stepper.start(loaded, prompt, chat=True)
    ids = loaded.tokenizer(templated(loaded, prompt), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ]
    assert stepper.prompt_ids == ids[0].tolist()
    n = 24
    with torch.no_grad():
        expected = loaded.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    expected = expected[0, ids.shape[1] :].tolist()
    for want in expected:
        assert stepper.step(Settings()).token_id == want
        if stepper.finished:
            break
    assert "Paris" in stepper.text()
