"""The English text the project trains its sparse autoencoders on, from what installs offline: the
docstrings of Python's standard library (PSF licence) and of the pinned torch (BSD-3-Clause) and
transformers (Apache-2.0) in `.venv`. Documentation prose, with code and examples in it.

Every docstring of at least MIN_CHARS characters, each once, in a fixed order (package, file path, place
in the file); a docstring goes to the held-out part when a hash of its text says so (HELD_OUT of them),
so the split does not depend on the order files are found in.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

MIN_CHARS = 200
HELD_OUT = 0.02
SOURCES = ("stdlib", "torch", "transformers")


def roots() -> dict[str, Path]:
    """Where each source's Python files are, in this interpreter."""
    found = {"stdlib": Path(sysconfig.get_paths()["stdlib"])}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name) or __import__(name)
        found[name] = Path(module.__file__).parent
    return found


def docstrings(root: Path, skip: tuple[str, ...] = ("site-packages", "test", "tests")) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if any(part in skip for part in path.relative_to(root).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= MIN_CHARS:
                    yield text


def held_out(text: str) -> bool:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") < HELD_OUT * 2**32


def iter_texts(part: str = "train") -> Iterator[str]:
    """The corpus's docstrings of `part` ("train" or "held-out"), each once, in order, read as needed."""
    seen: set[str] = set()
    for root in roots().values():
        for text in docstrings(root):
            if text not in seen:
                seen.add(text)
                if held_out(text) == (part == "held-out"):
                    yield text


def texts(part: str = "train") -> list[str]:
    """All of iter_texts(part)."""
    return list(iter_texts(part))


def describe() -> str:
    versions = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers"):
        versions[name] = __import__(name).__version__
    return ", ".join(f"{k} {v}" for k, v in versions.items())
