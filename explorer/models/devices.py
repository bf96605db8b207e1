"""Devices, dtypes and memory: what to load on, and whether it fits."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import psutil
import torch

from explorer.errors import LoadError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps", "multi-gpu")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
MULTI_GPU = "multi-gpu"  # device_map="auto": accelerate spreads the layers over every GPU, then CPU


DEVICES = ("auto", "cpu", "cuda", "mps", MULTI_GPU)


def device_choices() -> list[str]:
    """The devices a user may pick on this machine: DEVICES, and cuda:0, cuda:1 ... when there are
    several GPUs."""
    gpus = torch.cuda.device_count()
    return list(DEVICES) + ([f"cuda:{i}" for i in range(gpus)] if gpus > 1 else [])


def resolve_device(choice: str) -> str:
    """'auto' -> cuda, else mps, else cpu. Raises LoadError for a device this machine lacks."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cpu":
        return "cpu"
    if choice == MULTI_GPU or choice.startswith("cuda"):
        if not torch.cuda.is_available():
            build = torch.__version__
            raise LoadError(
                f"{choice} was chosen, but torch {build} sees no CUDA GPU on this machine. "
                "Pick auto or cpu, or install a CUDA build of torch (README, section GPU)."
            )
        if choice.startswith("cuda:"):
            index = choice.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise LoadError(f"{choice}: this machine has {torch.cuda.device_count()} CUDA device(s).")
        return choice
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise LoadError("mps was chosen, but this machine has no Apple GPU. Pick auto or cpu.")
        return "mps"
    raise LoadError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)} or cuda:N.")


def resolve_dtype(choice: str, device: str) -> torch.dtype | str:
    """'auto' is float32 on the CPU (half precision is slow there) and the checkpoint's own dtype on a GPU."""
    choice = (choice or "auto").strip().lower()
    if choice == "auto":
        return torch.float32 if device == "cpu" else "auto"
    if choice in DTYPE_CHOICES:
        return getattr(torch, choice)
    raise LoadError(f"Unknown dtype {choice!r}; choose one of {', '.join(DTYPE_CHOICES)}.")


def available_bytes(device: str) -> int:
    """Free memory where the weights will go (for multi-gpu: every GPU plus the CPU)."""
    cpu_free = psutil.virtual_memory().available
    if device == "cpu" or device == "mps":  # mps shares the system memory
        return cpu_free
    if device == MULTI_GPU:
        return cpu_free + sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.mem_get_info(index)[0]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def human_count(n: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return str(n)


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows): nothing to trim
        return None


def release_freed_memory() -> None:
    """Hands memory freed by a large run back to the system. glibc keeps freed blocks in the heap of the
    thread that freed them, and every Streamlit session runs in its own thread: without this, each
    session that once ran the model keeps its peak (tens of MB for a 128-token capture) for good."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
