"""Two models loaded at once in a fresh process (the server's preload and a link's own model): transformers'
lazy imports raced, and the second load failed with "cannot import name 'AutoConfig'"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys, threading
from explorer.models.loading import LoadRequest
from explorer.models.registry import ModelRegistry

registry, errors = ModelRegistry(), []
def load(folder):
    try:
        registry.load(LoadRequest("folder", folder))
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
threads = [threading.Thread(target=load, args=(f,)) for f in sys.argv[1:]]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"errors": errors, "loaded": len(registry.loaded())}))
"""


def test_two_first_loads_at_once_both_succeed(tiny_dir):
    folders = [str(tiny_dir("gpt2")), str(tiny_dir("t5"))]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *folders], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"errors": [], "loaded": 2}
