"""The head finder and direct logit attribution on the embedded checkpoints (slow)."""

from __future__ import annotations

import pytest

from explorer.analyses import dla, heads
from explorer.models.loading import LoadRequest, load_model

pytestmark = pytest.mark.slow
CASES = {  # model: (text, decoder prefix, target, foil)
    "smollm2-135m-instruct": ("The Eiffel Tower is in the city of", "", " Paris", " Rome"),
    "gemma-3-270m": ("The Eiffel Tower is in the city of", "", " Paris", " Rome"),
    "date-normalizer": ("Tuesday, 23rd November 2026", "2026-1", "1", "2"),
}


@pytest.fixture(scope="module")
def loaded():
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = load_model(LoadRequest("embedded", name))
        return made[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_attribution_adds_up_to_the_models_logit_difference(loaded, name):
    text, prefix, target, foil = CASES[name]
    found = dla.attribute(loaded(name), text, target, foil, prefix)
    assert found.total == pytest.approx(found.logit_diff, abs=1e-4)
    assert found.logit_diff > 0  # each model prefers the right answer


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_the_decoders_have_induction_heads(loaded, name):
    found = heads.detect(loaded(name), "induction", seed=0)
    scores = [r["score"] for r in found.ranked()]
    assert scores[0] > 0.5 and scores[len(scores) // 2] < 0.1  # a few heads do it, most do not


def test_integrated_gradients_on_the_date_normalizer_completes(loaded):
    from explorer.analyses import attribution

    found = attribution.attribute(loaded("date-normalizer"), "Tuesday, 23rd November 2026", "1",
                                  "integrated_gradients", "2", prefix="2026-1", steps=128)  # fmt: skip
    change = float(found.scores.sum()) - found.delta
    assert abs(found.delta) <= 0.01 * abs(change)
    assert len(found.tokens) == 28  # one token per character, and </s>


def test_attribution_patching_tracks_exact_patching_of_attention_on_smollm2(loaded):
    from explorer.analyses import atp, experiments

    args = ("The Eiffel Tower is in the city of", "The Colosseum is in the city of", " Paris", " Rome")
    exact = experiments.patch(loaded("smollm2-135m-instruct"), *args, kinds=("attn",))
    approx = atp.approximate(loaded("smollm2-135m-instruct"), *args, kinds=("attn",))
    assert approx.ld_corrupt == pytest.approx(exact.ld_corrupt, abs=1e-4)
    assert atp.correlation(exact.restored["attn"], approx.restored["attn"]) > 0.5


def test_steering_gemma_at_coefficient_zero_changes_nothing(loaded):
    import torch

    from explorer.analyses import steering
    from explorer.runs.stepping import Settings, Stepper

    model = loaded("gemma-3-270m")
    zero = steering.build(model, ["I love you"], ["I hate you"], 6, 0.0)
    plain, steered = Stepper.start(model, "Rivers carry"), Stepper.start(model, "Rivers carry", steer=zero)
    for _ in range(3):
        assert torch.equal(plain._state.logits, steered._state.logits)
        assert plain.step(Settings()).token_id == steered.step(Settings()).token_id


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "date-normalizer"])
def test_each_generated_tokens_attributed_logit_is_the_one_it_was_chosen_by(loaded, name):
    import torch

    from explorer.analyses import attribution
    from explorer.runs.stepping import Settings, Stepper

    model = loaded(name)
    seq2seq = name == "date-normalizer"
    s = Stepper.start(model, "", source=CASES[name][0]) if seq2seq else Stepper.start(model, CASES[name][0])
    for _ in range(3):
        s.step(Settings())
    found = attribution.per_token(model, s.ids, len(s.prompt_ids), "input_x_gradient", s.source_ids)
    with torch.no_grad():
        if seq2seq:
            logits = model.model(input_ids=torch.tensor([s.source_ids]),
                                 decoder_input_ids=torch.tensor([s.ids[:-1]])).logits[0]  # fmt: skip
        else:
            logits = model.model(input_ids=torch.tensor([s.ids[:-1]])).logits[0]
    for i, p in enumerate(range(len(s.prompt_ids), len(s.ids))):
        assert found.values[i] == pytest.approx(float(logits[p - 1, s.ids[p]]), abs=1e-3)
        assert found.ids == tuple(s.ids) and int(torch.argmax(logits[p - 1])) == s.ids[p]  # greedy
