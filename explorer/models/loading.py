"""Loading any transformer checkpoint: embedded, Hugging Face Hub id, local folder or GGUF file.

`load_model(LoadRequest(...))` returns a `LoadedModel`: the model in eval mode with eager attention
(the default sdpa returns no attention weights), its tokenizer, and its `ModelCard`. Every failure
a user can cause raises `LoadError` with a message that says what is wrong.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from explorer.errors import LoadError, first_line
from explorer.models import convert, devices, zoo
from explorer.models.card import ModelCard, build_card, detect_family
from explorer.serving.turns import TurnLock

Progress = Callable[[str, float], None]
SOURCES = ("embedded", "hub", "folder", "gguf")
HUB_PROBE_TIMEOUT_S = 2.5
LOAD_HEADROOM = 1.15


@dataclass(frozen=True)
class LoadRequest:
    """What the user asked for. Hashable: the key under which a loaded model is shared."""

    source: str  # embedded | hub | folder | gguf
    ref: str  # zoo name, hub id, folder path or .gguf path
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False

    @classmethod
    def parse(cls, model: str, **options: Any) -> "LoadRequest":
        """Reads a command-line MODEL: an embedded name, a .gguf path, a folder, else a hub id."""
        model = model.strip()
        if model in zoo.ZOO:
            return cls("embedded", model, **options)
        if model.lower().endswith(".gguf"):
            return cls("gguf", model, **options)
        if Path(model).expanduser().exists() or model.startswith(("/", ".", "~")):
            return cls("folder", model, **options)
        return cls("hub", model, **options)

    @property
    def label(self) -> str:
        return self.ref if self.source != "folder" else Path(self.ref).name or self.ref


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model loaded once and shared read-only; run inference on it under `lock`."""

    request: LoadRequest
    model: Any  # transformers.PreTrainedModel, eval mode, eager attention
    tokenizer: Any
    card: ModelCard
    load_seconds: float
    weights_from: str  # the folder or hub id the weights were read from
    lock: TurnLock = field(default_factory=TurnLock, repr=False)  # sessions take turns, first come first


def load_model(
    request: LoadRequest,
    progress: Progress | None = None,
    free_bytes: int | None = None,
) -> LoadedModel:
    """Loads `request`. `free_bytes` overrides the measured free memory (for tests)."""
    progress = progress or (lambda stage, frac: None)
    if request.source not in SOURCES:
        raise LoadError(f"Unknown model source {request.source!r}; use one of {', '.join(SOURCES)}.")
    if not request.ref.strip():
        raise LoadError("No model given: enter a model name, hub id or path.")
    started = time.perf_counter()
    device = devices.resolve_device(request.device)
    dtype = devices.resolve_dtype(request.dtype, device)
    free = devices.available_bytes(device) if free_bytes is None else free_bytes

    where, hub_kwargs = _resolve_weights(request, progress, free)
    progress("read config", 0.6)
    config = _read_config(where, request, hub_kwargs)
    family = detect_family(config)

    progress("estimate memory", 0.62)
    need = estimate_bytes(config, family, dtype, request.trust_remote_code)
    if need and need * LOAD_HEADROOM > free:
        raise LoadError(
            f"{request.label} needs about {devices.human_bytes(need)} of weights "
            f"({_dtype_name(dtype, config)}), and only {devices.human_bytes(free)} is free on "
            f"{device}. Pick a smaller model, dtype bfloat16 or float16, or a device with more memory."
        )

    progress("load weights", 0.65)
    model = _load_weights(where, config, family, device, dtype, request, hub_kwargs)
    progress("tokenizer", 0.9)
    tokenizer = _load_tokenizer(where, request, hub_kwargs)
    model.eval()
    model.requires_grad_(False)
    card = build_card(model, tokenizer, name=request.label, source=request.source)
    progress("ready", 1.0)
    return LoadedModel(
        request=request,
        model=model,
        tokenizer=tokenizer,
        card=card,
        load_seconds=time.perf_counter() - started,
        weights_from=str(where),
    )


def _resolve_weights(request: LoadRequest, progress: Progress, free: int) -> tuple[str, dict]:
    """Where from_pretrained should read: a local folder, or a hub id with its keyword arguments."""
    if request.source == "embedded":
        return str(embedded_weights(zoo.entry(request.ref), free, progress)), {}
    if request.source == "gguf":
        path = Path(request.ref).expanduser()
        convert.check_gguf(path)
        return str(convert.convert_gguf(path, convert.file_key(path), free, progress)), {}
    if request.source == "folder":
        path = Path(request.ref).expanduser()
        check_checkpoint_folder(path)
        return str(path), {}
    return request.ref.strip(), _hub_kwargs(request.ref.strip(), request.trust_remote_code)


def embedded_weights(item: zoo.ZooEntry, free: int, progress: Progress) -> Path:
    """The folder of an embedded model's weights, converting its GGUF into the cache the first time."""
    if convert.is_converted(item.cache_key):  # skips locating (Gemma: assembling 253 MB of chunks)
        return convert.converted_path(item.cache_key)
    progress(f"locate {item.name}", 0.01)
    kind, path = item.locate(item, convert.cache_dir())
    if kind == "folder":
        return path
    folder = convert.convert_gguf(path, item.cache_key, free, progress)
    if convert.cache_dir() in path.parents:  # assembled from chunks for this conversion only
        path.unlink(missing_ok=True)
    return folder


def check_checkpoint_folder(path: Path) -> None:
    """A clear message for a folder that is not a transformers checkpoint or has damaged weights."""
    if not path.exists():
        raise LoadError(f"No folder at {path}.")
    if not path.is_dir():
        if path.suffix == ".gguf":
            raise LoadError(f"{path} is a GGUF file: choose the source 'GGUF file'.")
        raise LoadError(f"{path} is a file; a local checkpoint is a folder with config.json and weights.")
    if not (path / "config.json").exists():
        raise LoadError(
            f"{path} is not a transformers checkpoint: it has no config.json "
            "(a checkpoint is what save_pretrained writes: config.json, weights, tokenizer files)."
        )
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    if not weights:
        raise LoadError(f"{path} has a config.json but no weights (*.safetensors or *.bin).")
    for file in path.glob("*.safetensors"):
        check_safetensors(file)


def check_safetensors(file: Path) -> None:
    """Reads the header and checks the file holds every byte it promises (damaged or truncated files)."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise LoadError(
            f"The weights file {file.name} is damaged: its header cannot be read ({err})."
        ) from err
    if 8 + header_len + end > size:
        raise LoadError(
            f"The weights file {file.name} is truncated: its header lists {devices.human_bytes(end)} of "
            f"tensors, and the file holds {devices.human_bytes(size - 8 - header_len)}."
        )


def _hub_kwargs(repo_id: str, trust_remote_code: bool) -> dict:
    """Uses the local Hugging Face cache when it has the model; otherwise checks the Hub is reachable
    in at most a few seconds (a plain from_pretrained retries for 23 s when offline)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoConfig

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise LoadError(
            f"{repo_id!r} is not a Hugging Face Hub id (like gpt2 or google-t5/t5-small), "
            "nor an existing folder or .gguf file."
        ) from None
    try:
        AutoConfig.from_pretrained(repo_id, local_files_only=True, trust_remote_code=trust_remote_code)
        cached = True
    except (OSError, ValueError):
        cached = False
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise LoadError(f"{repo_id} is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set.")
        return {"local_files_only": True}
    status = _probe_hub(repo_id, constants.ENDPOINT)
    if status == "offline":
        if cached:
            return {"local_files_only": True}
        raise LoadError(
            f"{repo_id} is not in the local Hugging Face cache, and the Hub ({constants.ENDPOINT}) cannot "
            "be reached from here. Use an embedded model, a local folder or a GGUF file, or connect."
        )
    if status == "missing":
        raise LoadError(
            f"The Hugging Face Hub has no model {repo_id} (or it is private or gated: log in with "
            "`hf auth login` and accept its terms on its page)."
        )
    return {}


def _probe_hub(repo_id: str, endpoint: str) -> str:
    """'ok', 'missing' or 'offline', within HUB_PROBE_TIMEOUT_S. The request runs in a thread because
    urllib's timeout does not bound the name lookup, which can hang on a half-configured network."""
    answer: list[str] = []
    worker = threading.Thread(target=lambda: answer.append(_ask_hub(repo_id, endpoint)), daemon=True)
    worker.start()
    worker.join(HUB_PROBE_TIMEOUT_S + 0.2)
    return answer[0] if answer else "offline"


def _ask_hub(repo_id: str, endpoint: str) -> str:
    from huggingface_hub import get_token

    req = urllib.request.Request(f"{endpoint.rstrip('/')}/api/models/{repo_id}", method="GET")
    token = get_token()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=HUB_PROBE_TIMEOUT_S):
            return "ok"
    except urllib.error.HTTPError as err:
        return "missing" if err.code in (401, 403, 404) else "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return "offline"


def _read_config(where: str, request: LoadRequest, hub_kwargs: dict):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=request.trust_remote_code, **hub_kwargs)
    except ValueError as err:
        text = str(err)
        if "trust_remote_code" in text:
            raise LoadError(
                f"{request.label} ships its own Python code, which would run on this machine. It was "
                "refused: turn on 'Run code from the checkpoint' only if you trust its author."
            ) from err
        if "model_type" in text or "Unrecognized" in text:
            raise LoadError(
                f"transformers {_tf_version()} does not know the architecture of {request.label}: "
                f"{first_line(err)}"
            ) from err
        raise LoadError(f"The config of {request.label} cannot be read: {first_line(err)}") from err
    except OSError as err:
        raise LoadError(f"The config of {request.label} cannot be read: {first_line(err)}") from err


def model_class(config, family: str, trust_remote_code: bool = False):
    """The class to load: the LM head for decoders and encoder-decoders (generation, logit lens);
    for encoders the checkpoint's own architecture when transformers has it, else the bare model."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if getattr(config, "auto_map", None) and trust_remote_code:
        return {"decoder": AutoModelForCausalLM, "encoder-decoder": AutoModelForSeq2SeqLM}.get(
            family, AutoModel
        )
    if family == "decoder":
        return AutoModelForCausalLM
    if family == "encoder-decoder":
        return AutoModelForSeq2SeqLM
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None and getattr(cls, "config_class", None) is type(config):
            return cls
    return AutoModel


def estimate_bytes(config, family: str, dtype, trust_remote_code: bool = False) -> int:
    """Bytes of parameters and buffers, counted on the meta device (nothing is allocated)."""
    cls = model_class(config, family, trust_remote_code)
    target = dtype if isinstance(dtype, torch.dtype) else _config_dtype(config)
    try:
        with torch.device("meta"):
            if hasattr(cls, "from_config"):
                shell = cls.from_config(config, trust_remote_code=trust_remote_code)
            else:
                shell = cls._from_config(config)
    except Exception:  # an estimate only: a model that cannot be built on meta is loaded unchecked
        return 0
    n = sum(p.numel() for p in shell.parameters()) * target.itemsize
    n += sum(b.numel() * b.element_size() for b in shell.buffers())
    return int(n)


def _config_dtype(config) -> torch.dtype:
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def _dtype_name(dtype, config) -> str:
    return str(dtype if isinstance(dtype, torch.dtype) else _config_dtype(config)).replace("torch.", "")


def _load_weights(where, config, family, device, dtype, request: LoadRequest, hub_kwargs):
    cls = model_class(config, family, request.trust_remote_code)
    kwargs: dict[str, Any] = dict(
        config=config,
        dtype=dtype,
        attn_implementation="eager",
        trust_remote_code=request.trust_remote_code,
        **hub_kwargs,
    )
    if device == devices.MULTI_GPU:
        kwargs["device_map"] = "auto"
    elif device != "cpu":
        kwargs["device_map"] = device
    try:
        return cls.from_pretrained(where, **kwargs)
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise LoadError(f"{request.label} does not fit in the memory of {device}: {first_line(err)}") from err
    except LoadError:
        raise
    except Exception as err:  # safetensors, torch and transformers raise many types here
        raise LoadError(f"The weights of {request.label} cannot be loaded: {first_line(err)}") from err


def _load_tokenizer(where, request: LoadRequest, hub_kwargs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=request.trust_remote_code, **hub_kwargs)
    except Exception as err:
        raise LoadError(
            f"{request.label} has no tokenizer that transformers can load: {first_line(err)}"
        ) from err


def _tf_version() -> str:
    import transformers

    return transformers.__version__
