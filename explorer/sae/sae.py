"""A sparse autoencoder on the residual stream entering one block, saved and read in SAELens' layout:

    cfg.json                 d_in, d_sae, architecture ("topk", "jumprelu" or "standard"), hook_name
                             ("blocks.L.hook_resid_pre"), hook_layer L, k (topk), model_name, dtype, ...
    sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in],
                             threshold [d_sae] (jumprelu)

Encoding is pre = (x - b_dec) W_enc + b_enc, then f = TopK(ReLU(pre)) (the k largest kept), or
pre * (pre > threshold) (JumpReLU), or ReLU(pre) (standard); decoding is f W_dec + b_dec. Gemma Scope and
SAELens' own saves read the same way (SAELens' `apply_b_dec_to_input` is honoured).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from explorer.errors import InputError

ARCHITECTURES = ("topk", "jumprelu", "standard")
CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


@dataclass
class Sae:
    W_enc: torch.Tensor  # (d_in, d_sae) float32
    b_enc: torch.Tensor  # (d_sae,)
    W_dec: torch.Tensor  # (d_sae, d_in)
    b_dec: torch.Tensor  # (d_in,)
    architecture: str = "topk"
    layer: int = 0  # the block whose input (the residual stream entering it) is read
    k: int | None = None  # topk
    threshold: torch.Tensor | None = None  # jumprelu, (d_sae,)
    apply_b_dec_to_input: bool = True
    cfg: dict = field(default_factory=dict)  # the whole cfg.json as read or written
    folder: Path | None = None

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_sae) pre-activations of x (..., d_in)."""
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - self.b_dec.to(x.device)
        return x @ self.W_enc.to(x.device) + self.b_enc.to(x.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d_sae) feature activations of x (..., d_in)."""
        pre = self.pre(x)
        if self.architecture == "topk":
            top = torch.relu(pre).topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold.to(pre.device))
        return torch.relu(pre)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f.float() @ self.W_dec.to(f.device) + self.b_dec.to(f.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # -- files --------------------------------------------------------------------------------------

    def save(self, folder: Path, dtype: torch.dtype = torch.float32, **cfg) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in tensors.items()}, folder / WEIGHTS)
        self.cfg = {
            "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
            "hook_name": f"blocks.{self.layer}.hook_resid_pre", "hook_layer": self.layer,
            "apply_b_dec_to_input": self.apply_b_dec_to_input, "dtype": str(dtype).removeprefix("torch."),
            **({"k": self.k} if self.k is not None else {}), **cfg,
        }  # fmt: skip
        (folder / CFG).write_text(json.dumps(self.cfg, indent=2) + "\n")


def load(folder: str | Path) -> Sae:
    """The SAE saved in `folder` (SAELens' layout); InputError saying what is missing or unread."""
    folder = Path(folder)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        raise InputError(
            f"{folder} is not a sparse autoencoder in SAELens' layout: it needs {CFG} and {WEIGHTS}."
        )
    try:
        cfg = json.loads((folder / CFG).read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{folder / CFG} is not JSON: {err}") from None
    from safetensors.torch import load_file

    w = {k: v.float() for k, v in load_file(folder / WEIGHTS).items()}
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in w]
    if missing:
        raise InputError(f"{folder / WEIGHTS} lacks {', '.join(missing)}.")
    arch = str(cfg.get("architecture", "standard")).lower()
    if arch not in ARCHITECTURES:
        raise InputError(
            f"The SAE's architecture {arch!r} is not read here (known: {', '.join(ARCHITECTURES)})."
        )
    layer = _layer(cfg)
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "topk" and not k:
        raise InputError("A TopK SAE's cfg.json must give k.")
    if arch == "jumprelu" and "threshold" not in w:
        raise InputError("A JumpReLU SAE needs its threshold in the weights file.")
    d_in, d_sae = w["W_enc"].shape
    if w["W_dec"].shape != (d_sae, d_in):
        raise InputError(f"W_dec is {tuple(w['W_dec'].shape)}, not [d_sae, d_in] = [{d_sae}, {d_in}].")
    return Sae(
        w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], arch, layer, int(k) if k else None,
        w.get("threshold"), bool(cfg.get("apply_b_dec_to_input", True)), cfg, folder,
    )  # fmt: skip


def _layer(cfg: dict) -> int:
    """The block whose input the SAE reads, from hook_layer or a hook name "blocks.L.hook_resid_pre"."""
    if isinstance(cfg.get("hook_layer"), int):
        return cfg["hook_layer"]
    name = str(cfg.get("hook_name", ""))
    parts = name.split(".")
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] == "hook_resid_pre":
        return int(parts[1])
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] == "hook_resid_post":
        return int(parts[1]) + 1  # the stream leaving block L enters block L + 1
    raise InputError(
        f"The SAE reads {name or 'an unnamed hook'}: only the residual stream (blocks.L.hook_resid_pre "
        "or hook_resid_post) is read here."
    )
