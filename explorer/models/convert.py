"""GGUF files, converted once to a cached safetensors checkpoint.

transformers reads GGUF by dequantizing every tensor to float32, which takes 14-37 s for the
embedded models (Gemma's 262k-token tokenizer alone 16-20 s). The converted folder loads in about
2 s. The cache lives under $TRANSFORMER_EXPLORER_CACHE (default ~/.cache/transformer-explorer).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from explorer.errors import LoadError, first_line
from explorer.models.devices import human_bytes

Progress = Callable[[str, float], None]
GGUF_MAGIC = b"GGUF"
SEQ2SEQ_GGUF = {"t5", "umt5"}
# A GGUF load holds the dequantized float32 weights about three times over at its peak
# (measured: Gemma 3 270M, 1.07 GB of float32 weights, 3.3 GB peak).
GGUF_PEAK_FACTOR = 3.0
DONE_MARK = "converted.json"


def cache_dir() -> Path:
    root = os.environ.get("TRANSFORMER_EXPLORER_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "transformer-explorer"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_key(path: Path) -> str:
    """A cache key for a user's GGUF file: its name, plus a hash of where it is, its size and mtime."""
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return f"{path.stem}-{digest[:12]}"


def check_gguf(path: Path) -> None:
    if not path.exists():
        raise LoadError(f"No file at {path}.")
    if path.is_dir():
        raise LoadError(f"{path} is a folder; a GGUF path must name a .gguf file.")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise LoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")


@dataclass(frozen=True)
class GGUFSummary:
    architecture: str  # general.architecture, e.g. llama, gemma3, t5
    float32_bytes: int  # what its tensors take once dequantized to float32


def read_gguf(path: Path) -> GGUFSummary:
    """Reads the GGUF header (memory-mapped, no tensor is dequantized)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except (KeyError, ValueError, IndexError) as err:
        raise LoadError(f"{path.name} is not a readable GGUF file: {first_line(err)}") from err
    return GGUFSummary(arch, sum(int(t.n_elements) * 4 for t in reader.tensors))


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serializes conversions of one file across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_path(key: str) -> Path:
    return cache_dir() / "converted" / key


def is_converted(key: str) -> bool:
    return (converted_path(key) / DONE_MARK).exists()


def convert_gguf(gguf: Path, key: str, free_bytes: int, progress: Progress | None = None) -> Path:
    """Returns a folder with the GGUF's model and tokenizer as float32 safetensors.

    A finished conversion is found again by `key` without reading the file. A new one reads the GGUF
    header first and refuses a file whose conversion would not fit in `free_bytes`.
    """
    progress = progress or (lambda stage, frac: None)
    target = converted_path(key)
    if is_converted(key):
        return target
    with _file_lock(cache_dir() / "locks" / f"{key}.lock"):
        if is_converted(key):  # another process finished it while this one waited
            return target
        check_gguf(gguf)
        progress("read GGUF header", 0.03)
        summary = read_gguf(gguf)
        need = summary.float32_bytes * GGUF_PEAK_FACTOR
        if need > free_bytes:
            raise LoadError(
                f"Converting {gguf.name} needs about {human_bytes(need)} of memory (the weights "
                f"dequantized to float32, held about 3 times at the peak); {human_bytes(free_bytes)} is free."
            )
        tmp = target.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.perf_counter()
        try:
            model, tokenizer = _load_gguf(gguf, summary.architecture, progress)
            progress("convert: save safetensors", 0.85)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / DONE_MARK).write_text(
                json.dumps(
                    {
                        "source": str(gguf),
                        "size": gguf.stat().st_size,
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                )
            )
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_gguf(path: Path, architecture: str, progress: Progress):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise LoadError(
            f"transformers cannot load the GGUF file {path.name}: its architecture {architecture!r} is "
            f"not one it reads from GGUF ({known})."
        )
    folder, name = str(path.parent), path.name
    try:
        progress("convert: tokenizer from GGUF", 0.1)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        progress("convert: dequantize weights", 0.4)
        auto = AutoModelForSeq2SeqLM if architecture in SEQ2SEQ_GGUF else AutoModelForCausalLM
        model = auto.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as err:
        raise LoadError(f"transformers cannot load the GGUF file {path.name}: {first_line(err)}") from err
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # A GGUF-loaded model refuses save_pretrained while it carries the GGUF quantization config.
        quantizer.remove_quantization_config(model)
    return model, tokenizer
