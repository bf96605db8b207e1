"""What the research instruments cost on SmolLM2 (30 layers x 9 heads), each against one plain forward pass
of the same input, measured in one run (best of 3 for every timing):

- heads_s / heads_ratio: scoring all 270 heads for induction on the default probe (50 random tokens
  twice), over one forward pass of the probe.
- ig_ratio: integrated gradients with 32 steps (one batch of 32 forward and backward passes) over one
  forward pass of the text. Goal: at most 12.
- dla_ratio: direct logit attribution (one hooked forward pass and the arithmetic) over one forward pass.
- steer_ratio: time per generated token with steering over without (16 greedy tokens each, KV cache on).
  Goal: at most 1.05.
- attribution patching is not built yet (issue 18): reported as null.

Prints one JSON object on its last line. Run: `.venv/bin/python bench/instruments.py`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analyses import attribution, dla, heads, steering  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs import hooked  # noqa: E402
from explorer.runs.stepping import Settings, Stepper  # noqa: E402

TEXT = "The Eiffel Tower is in the city of"
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
    dla_s = best(lambda: dla.attribute(loaded, TEXT, " Paris", " Rome"))
    steer = steering.build(loaded, ["I love you"], ["I hate you"], 6, 2.0)
    plain, steered = generate(loaded, None), generate(loaded, steer)
    print(json.dumps({
        "heads_s": round(heads_s, 3), "heads_ratio": round(heads_s / f_probe, 1),
        "ig_s": round(ig_s, 3), "ig_ratio": round(ig_s / f_text, 1), "ig_goal": 12,
        "dla_s": round(dla_s, 3), "dla_ratio": round(dla_s / f_text, 1),
        "step_s": round(plain, 4), "steered_step_s": round(steered, 4),
        "steer_ratio": round(steered / plain, 3), "steer_goal": 1.05,
        "attribution_patching_ratio": None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
