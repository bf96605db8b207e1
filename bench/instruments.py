"""What the research instruments cost on SmolLM2 (30 layers x 9 heads), each against one plain forward pass
of the same input, measured in one run (best of 3 for every timing):

- heads_s / heads_ratio: scoring all 270 heads for induction on the default probe (50 random tokens
  twice), over one forward pass of the probe.
- ig_ratio: integrated gradients with 32 steps (one batch of 32 forward and backward passes) over one
  forward pass of the text. Goal: at most 12. ig_floor_ratio: the same batch's forward and backward
  alone, without Captum (the least integrated gradients can cost here): on 2 CPU cores the batch is
  bound by arithmetic while one pass of 9 tokens is bound by overhead, so the floor is above the goal.
- dla_ratio: direct logit attribution (one hooked forward pass and the arithmetic) over one forward pass.
- steer_ratio: time per generated token with steering over without (16 greedy tokens each, KV cache on).
  Goal: at most 1.05.
- atp_ratio: attribution patching of the Eiffel Tower / Colosseum pair (all 3 kinds, 30 layers, 9
  positions) over one forward and backward pass of the corrupted prompt; exact_s is exact patching of
  the same 810 cells, for scale. Goal: at most 4.

Prints one JSON object on its last line. Run: `.venv/bin/python bench/instruments.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analyses import atp, attribution, dla, experiments, heads, steering  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs import hooked  # noqa: E402
from explorer.runs.stepping import Settings, Stepper  # noqa: E402

TEXT = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"
STEPS = 16


def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def forward(loaded, ids: list[int]) -> float:
    kwargs = {**hooked.inputs(loaded.model, ids), **hooked.options(loaded.model)}
    with torch.inference_mode():
        loaded.model(**kwargs)
        return best(lambda: loaded.model(**kwargs))


def generate(loaded, steer) -> float:
    def run():
        s = Stepper.start(loaded, TEXT, steer=steer)
        for _ in range(STEPS):
            s.step(Settings())

    return best(run) / STEPS


def forward_backward(loaded) -> float:
    """One forward and backward pass of the corrupted prompt's logit difference."""
    probe = experiments.prepare(loaded, CORRUPT)
    t = experiments.target_token(loaded, probe, " Paris")
    f = experiments.target_token(loaded, probe, " Rome")

    def run():
        with torch.enable_grad():
            out = loaded.model(**atp._with_embeddings(loaded.model, probe.inputs))
            (out.logits[0, -1, t.token_id] - out.logits[0, -1, f.token_id]).backward()

    return best(run)


def batch_forward_backward(loaded, ids: list[int], batch: int = 32) -> float:
    """One forward and backward pass of `batch` copies of the text's embeddings (what integrated
    gradients runs, without Captum): the gradient of one logit at the last position."""
    model = loaded.model
    emb = model.get_input_embeddings()(torch.tensor([ids])).detach()

    def run():
        e = emb.expand(batch, -1, -1).clone().requires_grad_()
        with torch.enable_grad():
            model(inputs_embeds=e, **hooked.options(model, last_logits_only=True)).logits[
                :, -1, 0
            ].sum().backward()

    return best(run)


def main() -> None:
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    probe = heads.probe(loaded)
    text_ids = hooked.encode(loaded.model, loaded.tokenizer, TEXT)
    f_probe, f_text = forward(loaded, probe), forward(loaded, text_ids)
    heads_s = best(lambda: heads.detect(loaded, "induction"))
    attribution.attribute(loaded, TEXT, " Paris", "saliency")  # Captum's import, once
    ig_s = best(
        lambda: attribution.attribute(loaded, TEXT, " Paris", "integrated_gradients", " Rome", steps=32)
    )
    floor_s = batch_forward_backward(loaded, text_ids)
    dla_s = best(lambda: dla.attribute(loaded, TEXT, " Paris", " Rome"))
    steer = steering.build(loaded, ["I love you"], ["I hate you"], 6, 2.0)
    plain, steered = generate(loaded, None), generate(loaded, steer)
    fb = forward_backward(loaded)
    atp_s = best(lambda: atp.approximate(loaded, TEXT, CORRUPT, " Paris", " Rome"))
    exact_s = best(lambda: experiments.patch(loaded, TEXT, CORRUPT, " Paris", " Rome"), repeats=1)
    print(json.dumps({
        "heads_s": round(heads_s, 3), "heads_ratio": round(heads_s / f_probe, 1),
        "ig_s": round(ig_s, 3), "ig_ratio": round(ig_s / f_text, 1), "ig_goal": 12,
        "ig_floor_ratio": round(floor_s / f_text, 1),
        "dla_s": round(dla_s, 3), "dla_ratio": round(dla_s / f_text, 1),
        "step_s": round(plain, 4), "steered_step_s": round(steered, 4),
        "steer_ratio": round(steered / plain, 3), "steer_goal": 1.05,
        "atp_s": round(atp_s, 3), "atp_ratio": round(atp_s / fb, 1), "atp_goal": 4,
        "exact_s": round(exact_s, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
