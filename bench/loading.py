"""Load time of each embedded model: first load (with GGUF conversion) and load from the converted cache.

Each load runs in a fresh Python process with an empty conversion cache for the first one, so the
numbers are what a new user and a returning user wait. Usage: .venv/bin/python bench/loading.py
The last line of output is one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from explorer.models.loading import LoadRequest, load_model
stages = {}
last = [time.perf_counter(), None]
def progress(stage, frac):
    now = time.perf_counter()
    if last[1] is not None:
        stages[last[1]] = stages.get(last[1], 0) + now - last[0]
    last[0], last[1] = now, stage
t = time.perf_counter()
lm = load_model(LoadRequest("embedded", sys.argv[1]), progress)
print(json.dumps({"seconds": time.perf_counter() - t, "stages": stages, "params": lm.card.n_params}))
"""


def timed_load(name: str, cache: str) -> dict:
    env = {**os.environ, "TRANSFORMER_EXPLORER_CACHE": cache, "TRANSFORMERS_VERBOSITY": "error",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from explorer.models import zoo

    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in zoo.ZOO:
            first = timed_load(name, cache)
            cached = timed_load(name, cache)
            results[name] = {
                "first_load_s": round(first["seconds"], 2),
                "cached_load_s": round(cached["seconds"], 2),
                "ratio": round(first["seconds"] / cached["seconds"], 1),
                "first_stages_s": {k: round(v, 2) for k, v in first["stages"].items()},
            }
            print(
                f"{name}: first {first['seconds']:.1f} s, from cache {cached['seconds']:.1f} s",
                file=sys.stderr,
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
