"""A first view kept on disk: one capture of a model's default text, saved after a live run, so that a
server's first visitor sees that picture while the model is still loading (explorer.session.preview).

A saved view is used only where everything that computed it is unchanged: the load request, the weights'
version (an embedded model's package version or weights digest), the device and dtype it runs on, the
versions of torch, transformers and numpy, and this project's own code (a digest of every explorer/*.py).
Any change gives another file name, so a stale view is never read; the next live run writes the new one.
The text is kept inside: a page uses the view only for the very text it holds.

Files: `<cache>/first-view/<model>-<digest>.npz`, the arrays plus one JSON header (no pickle).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from explorer.models import convert, devices, zoo
from explorer.models.card import ModelCard
from explorer.models.loading import LoadRequest
from explorer.runs.capture import Capture, Sequence

FOLDER = "first-view"
ARRAYS = ("attentions", "hidden_states", "next_token_logits", "encoder_attentions", "encoder_hidden_states",
          "cross_attentions")  # fmt: skip
LIBRARIES = ("torch", "transformers", "numpy", "tokenizers")
CODE = Path(__file__).resolve().parents[1]  # explorer/


@dataclass(frozen=True)
class SavedView:
    """A live run of `text` on `request`'s model, read back: the capture and the card of the model."""

    request: LoadRequest
    card: ModelCard
    text: str
    capture: Capture
    saved_at: float  # time.time() when it was written


@functools.cache
def code_digest() -> str:
    """sha256 of this project's library code (every explorer/*.py, path and contents)."""
    digest = hashlib.sha256()
    for path in sorted(CODE.rglob("*.py")):
        digest.update(str(path.relative_to(CODE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(request: LoadRequest) -> str:
    """What a capture on `request` depends on, besides its text, hashed: 16 hex digits."""
    entry = zoo.entry_of(request)
    device = devices.resolve_device(request.device)
    parts = {
        "request": asdict(request),
        "weights": entry.version if entry is not None else None,
        "device": device,
        "dtype": str(devices.resolve_dtype(request.dtype, device)),
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def savable(request: LoadRequest) -> bool:
    """Only embedded models: their weights' version is known without reading a user's folder or file."""
    return zoo.entry_of(request) is not None


def path_for(request: LoadRequest, root: Path | None = None) -> Path:
    """One view per model: the file its current view has (or would have)."""
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", request.ref)[:60]
    return (root or convert.cache_dir()) / FOLDER / f"{slug}-{fingerprint(request)}.npz"


def save(request: LoadRequest, card: ModelCard, text: str, cap: Capture, root: Path | None = None) -> Path:
    """Writes the view (replacing this model's older views) and returns its path."""
    path = path_for(request, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "request": asdict(request),
        "card": asdict(card),
        "text": text,
        "saved_at": time.time(),
        "capture": {
            "model_name": cap.model_name,
            "family": cap.family,
            "sequence": _sequence_dict(cap.sequence),
            "source": _sequence_dict(cap.source) if cap.source is not None else None,
            "windows": list(cap.windows),
            "next_token": cap.next_token,
            "target_generated": cap.target_generated,
            "meta": cap.meta,
        },
    }
    arrays = {name: getattr(cap, name) for name in ARRAYS if getattr(cap, name) is not None}
    partial = path.with_suffix(f".{os.getpid()}.part")
    with partial.open("wb") as out:  # written whole, then renamed: a reader never sees half a file
        np.savez(out, header=np.array(json.dumps(header)), **arrays)
    partial.replace(path)
    for old in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.npz"):  # the slug has no "-"
        if old != path:
            old.unlink(missing_ok=True)
    return path


def find(request: LoadRequest, root: Path | None = None) -> SavedView | None:
    """`request`'s saved view, if one was saved with everything but the text unchanged (the caller
    compares the text); else None."""
    if not savable(request):
        return None
    path = path_for(request, root)
    try:
        stat = path.stat()
        return _read(path, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError, KeyError, TypeError):  # none, or a damaged file, which is as good as none
        return None


@functools.lru_cache(maxsize=4)
def _read(path: Path, mtime_ns: int, size: int) -> SavedView:
    """The view in `path`; kept per file version (its time and size): a live run that finds other numbers
    rewrites the file under the same name (session.keep_first_view)."""
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        arrays = {name: data[name] for name in ARRAYS if name in data.files}
    c = header["capture"]
    cap = Capture(
        model_name=c["model_name"],
        family=c["family"],
        sequence=_sequence(c["sequence"]),
        source=_sequence(c["source"]) if c["source"] is not None else None,
        windows=tuple(c["windows"]),
        next_token=c["next_token"],
        target_generated=c["target_generated"],
        meta=c["meta"],
        **arrays,
    )
    card = header["card"]
    card["layer_types"] = tuple(card["layer_types"])
    names = {f.name for f in fields(ModelCard)}
    return SavedView(
        request=LoadRequest(**header["request"]),
        card=ModelCard(**{k: v for k, v in card.items() if k in names}),
        text=header["text"],
        capture=cap,
        saved_at=header["saved_at"],
    )


def same(a: Capture, b: Capture, atol: float = 1e-5) -> bool:
    """Whether two captures hold the same tokens and, to `atol`, the same numbers."""
    if (a.sequence, a.source, a.windows, a.next_token) != (b.sequence, b.source, b.windows, b.next_token):
        return False
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return False
        if x is not None and (x.shape != y.shape or not np.allclose(x, y, rtol=0, atol=atol)):
            return False
    return True


def _sequence_dict(seq: Sequence) -> dict:
    return {"ids": list(seq.ids), "tokens": list(seq.tokens), "special": list(seq.special)}


def _sequence(d: dict) -> Sequence:
    return Sequence(tuple(d["ids"]), tuple(d["tokens"]), tuple(d["special"]))
