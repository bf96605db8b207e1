"""What stepping by hand costs against transformers' own generate(), on SmolLM2.

- ratio_16, ratio_256: time per step of the stepper (KV cache, transformers' processors, the new token's
  attention kept for every layer and head) over time per token of `model.generate` (greedy), with a
  prompt of 16 and of 256 tokens. generate's time per token is (t(1 + N tokens) - t(1 token)) / N, so its
  prompt pass is not counted; the stepper's prompt pass is not counted either.
- no_cache_ratio_256: the same for a stepper that runs the whole prefix again at every step (no cache),
  with attention, at 256 prompt tokens.

Each figure is the median of interleaved repeats in one run. Prints one JSON object on its last line.
Run: `.venv/bin/python bench/stepper.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attention import text_of  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402
from explorer.runs.stepping import Settings, Stepper  # noqa: E402

STEPS = 16
REPEATS = 3


def generate_per_token(loaded, ids: torch.Tensor) -> float:
    model = loaded.model
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        t = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t

    return (run(1 + STEPS) - run(1)) / STEPS


def stepper_per_step(loaded, text: str) -> float:
    stepper = Stepper.start(loaded, text)
    settings = Settings()
    t = time.perf_counter()
    for i in range(STEPS):
        stepper.step(settings, pick=None if not stepper.finished else 0)
    return (time.perf_counter() - t) / STEPS


def no_cache_per_step(loaded, ids: torch.Tensor) -> float:
    model = loaded.model
    seq = ids
    t = time.perf_counter()
    for _ in range(STEPS):
        out = model(input_ids=seq, output_attentions=True, use_cache=False)
        nxt = out.logits[0, -1].argmax().view(1, 1)
        seq = torch.cat([seq, nxt], dim=1)
    return (time.perf_counter() - t) / STEPS


def main() -> int:
    torch.set_grad_enabled(False)
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    result: dict = {"device": "cpu", "threads": torch.get_num_threads(), "steps": STEPS}
    for n in (16, 256):
        text = text_of(loaded.tokenizer, n)
        ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
        stepper_per_step(loaded, text)  # warm-up
        gen, step, naive = [], [], []
        for _ in range(REPEATS):
            gen.append(generate_per_token(loaded, ids))
            step.append(stepper_per_step(loaded, text))
            if n == 256:
                naive.append(no_cache_per_step(loaded, ids))
        g, s = statistics.median(gen), statistics.median(step)
        result[f"generate_s_per_token_{n}"] = round(g, 4)
        result[f"stepper_s_per_step_{n}"] = round(s, 4)
        result[f"ratio_{n}"] = round(s / g, 3)
        if naive:
            result[f"no_cache_ratio_{n}"] = round(statistics.median(naive) / g, 3)
        print(f"{n} prompt tokens: {result}", file=sys.stderr, flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
