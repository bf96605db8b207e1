"""The embedded models give the numbers they gave before the deep commands were rewritten on the anatomy
(tests/golden/: the same commands' output at commit d32be2c)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from explorer import __main__ as cli

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FRANCE = ("--text", "The capital of France is", "--target", " Paris")
CAT = ("--text", "The cat sat on the mat.")
COMMANDS = {
    "smollm2-verify": ("verify", "smollm2-135m-instruct", "--text", "The capital of France is Paris."),
    "gemma-verify": ("verify", "gemma-3-270m", "--text", "The capital of France is Paris."),
    "minilm-verify": ("verify", "all-minilm-l6-v2", "--text", "The capital of France is Paris."),
    "dates-verify": ("verify", "date-normalizer", "--text", "March 3, 2021"),
    "smollm2-ablate": ("ablate", "smollm2-135m-instruct", *FRANCE, "--heads", "3.1,5.0,20.4", "--json"),
    "smollm2-ablate-mean": (
        "ablate",
        "smollm2-135m-instruct",
        *FRANCE,
        "--heads",
        "3.1,5.0",
        "--mode",
        "mean",
        "--json",
    ),  # fmt: skip
    "gemma-scan": ("ablate", "gemma-3-270m", *FRANCE, "--json"),
    "smollm2-patch": (
        "patch",
        "smollm2-135m-instruct",
        "--clean",
        "The Eiffel Tower is in",
        "--corrupt",
        "The Colosseum is in",
        "--target",
        " Paris",
        "--foil",
        " Rome",
        "--json",
    ),  # fmt: skip
    "smollm2-flow": ("flow", "smollm2-135m-instruct", *CAT, "--json"),
    "gemma-flow": ("flow", "gemma-3-270m", *CAT, "--json"),
    "minilm-flow": ("flow", "all-minilm-l6-v2", *CAT, "--json"),
    "dates-flow": ("flow", "date-normalizer", "--text", "March 3, 2021", "--json"),
    "dates-ablate": ("ablate", "date-normalizer", "--text", "March 3, 2021", "--target", "2", "--json"),
}
# The golden files were written on another CPU. On an AVX-512 one, Gemma's log-probability changes under
# ablation came out up to 2.4e-5 away (every other number within 3e-6): float32 sums in another order.
ATOL = {"gemma-scan": 1e-4}


def _close(new, old, where: str, atol: float = 1e-5) -> None:
    """Same structure, same strings, numbers within atol."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and new.keys() == old.keys(), where
        for key in old:
            _close(new[key], old[key], f"{where}.{key}", atol)
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            _close(a, b, f"{where}[{i}]", atol)
    elif isinstance(old, float) or isinstance(new, float):
        assert new == pytest.approx(old, abs=atol), where
    else:
        assert new == old, where


@pytest.mark.parametrize("name", COMMANDS)
def test_the_command_prints_what_it_printed_before(name, capsys):
    assert cli.main(list(COMMANDS[name])) == 0
    new = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    with gzip.open(GOLDEN / f"{name}.jsonl.gz", "rt") as f:
        old = [json.loads(line) for line in f if line.strip()]
    if COMMANDS[name][0] == "verify":  # from-scratch maps: still within float32 rounding of the model's
        assert new[0]["max_abs_diff"] <= new[0]["tolerance"]
    _close(new, old, name, ATOL.get(name, 1e-5))
