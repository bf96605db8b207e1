"""What a full head scan costs, on SmolLM2 (30 layers x 9 heads = 270 heads).

- scan_ratio: the time of `experiments.scan_heads` (every head knocked out on its own, zero ablation, a
  16-token text; rows batched) over 270 times one plain forward pass of the same text; both the best of
  interleaved rounds (scans between groups of forwards), as other work on a shared machine only slows
  a run down. Target: at most 0.5.
- patch_seconds: one activation-patching run (residual stream, attention and FFN outputs at every layer
  and position) of two 9-token prompts, for scale.

All measured in one run. Prints one JSON object on its last line.
Run: `.venv/bin/python bench/experiments.py`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.analyses import experiments  # noqa: E402
from explorer.models.loading import LoadRequest, load_model  # noqa: E402

TEXT = "In the old town by the river, the baker sold fresh bread, and the capital of France is"
TOKENS = 16
REPEATS = 5
ROUNDS = 3


def main() -> None:
    torch.set_grad_enabled(False)
    loaded = load_model(LoadRequest("embedded", "smollm2-135m-instruct"))
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(TEXT)["input_ids"][-TOKENS:]
    text = tok.decode(ids)
    probe = experiments.prepare(loaded, text)
    assert len(probe.ids) == TOKENS, probe.tokens
    target = experiments.target_token(loaded, probe, " Paris")
    heads = len(model.model.layers) * model.config.num_attention_heads

    def forward() -> float:
        t = time.perf_counter()
        model(**probe.inputs)
        return time.perf_counter() - t

    forward()  # warm up
    experiments.scan_heads(loaded, probe, target)
    # Interleaved rounds: others share this machine (runs of the same code varied 5-fold here), so each
    # figure is its best of the run: the fastest scan over 270 times the fastest forward.
    forwards, scans = [], []
    for _ in range(ROUNDS):
        forwards += [forward() for _ in range(REPEATS)]
        t = time.perf_counter()
        experiments.scan_heads(loaded, probe, target)
        scans.append(time.perf_counter() - t)
    forwards += [forward() for _ in range(REPEATS)]
    plain, scan = min(forwards), min(scans)
    t = time.perf_counter()
    experiments.patch(
        loaded, "The Eiffel Tower is in the city of", "The Colosseum is in the city of", " Paris", " Rome"
    )
    patch_seconds = time.perf_counter() - t
    result = {
        "model": "smollm2-135m-instruct",
        "tokens": TOKENS,
        "heads": heads,
        "forward_ms": round(plain * 1000, 2),
        "scan_seconds": round(scan, 3),
        "scan_ratio": round(scan / (heads * plain), 3),
        "scan_seconds_all": [round(x, 2) for x in scans],
        "forward_ms_median": round(statistics.median(forwards) * 1000, 2),
        "rows_per_batch": experiments.batch_size(model, probe),
        "patch_seconds": round(patch_seconds, 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
