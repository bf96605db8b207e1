"""Direct logit attribution on the Experiments page (AppTest): the parts add up to the model's own number."""

from __future__ import annotations

from explorer import session
from tests.app.helpers import charts, run
from tests.app.test_experiments_page import open_page
from views import experiments as page

KIND = "Direct logit attribution"


def test_the_parts_add_up_to_the_models_logit_difference(tiny_dir):
    at = open_page(tiny_dir("llama"), KIND)
    at.session_state[session.TEXT] = "the cat sat on the mat because it was"
    at.session_state[session.DLA_TARGET] = " tired"
    at.session_state[session.DLA_FOIL] = " dog"
    run(at)
    own, total = (float(m.value) for m in at.main.metric[:2])
    assert abs(own - total) <= 1e-4
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any(t.startswith("Heads: direct effect on logit(tired) − logit(dog)") for t in titles)
    assert any(t.startswith("Each block's direct effect") for t in titles)
    assert at.query_params["dla_target"] == " tired" and at.query_params["experiment"] == KIND


def test_with_no_target_the_models_own_prediction_is_attributed(tiny_dir):
    at = open_page(tiny_dir("gpt2"), KIND)
    own, total = (float(m.value) for m in at.main.metric[:2])
    assert abs(own - total) <= 1e-4


def test_a_post_norm_encoder_decoder_adds_up_with_its_cross_heads_apart(tiny_dir):
    at = open_page(tiny_dir("bart"), KIND)
    own, total = (float(m.value) for m in at.main.metric[:2])
    assert abs(own - total) <= 1e-4
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any(t.startswith("Cross-attention heads") for t in titles)
    assert any("every later norm on the residual path" in c.value for c in at.main.caption)


def test_a_masked_lm_is_read_at_its_mask_through_its_head(tiny_dir):
    at = open_page(tiny_dir("bert"), KIND)
    own, total = (float(m.value) for m in at.main.metric[:2])
    assert abs(own - total) <= 1e-4
    assert at.main.metric[2].value.endswith("[MASK]")
    assert any("of the mask" in c.value and "masked-LM head" in c.value for c in at.main.caption)


def test_soft_capped_logits_are_refused_with_a_reason(tiny_dir):
    at = open_page(tiny_dir("gemma2"), KIND)
    assert any("soft-caps" in w.value for w in at.main.warning)
    assert KIND in page.KINDS


def test_input_attribution_draws_every_method_and_checks_integrated_gradients(tiny_dir):
    at = open_page(tiny_dir("llama"), "Input attribution")
    at.session_state[session.TEXT] = "the cat sat on the mat because it was"
    at.session_state[session.DLA_TARGET] = " tired"
    run(at)
    spec = next(
        c for c in charts(at) if c["layout"]["title"]["text"].startswith("What the prediction of tired")
    )
    assert len(spec["data"][0]["y"]) == 5  # four Captum methods and rollout, one row each
    assert any(s.value.startswith("Integrated gradients: the scores add up to") for s in at.main.success)
