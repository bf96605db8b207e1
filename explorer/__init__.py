"""Transformer Explorer: load transformer checkpoints and look inside them.

The library is usable without Streamlit: `explorer.models.loading.load_model` returns a `LoadedModel`
with its `ModelCard`; `python -m explorer --help` is the command line over the same calls.

The names below are imported when first used, so that `import explorer.serving.startup` (app.py's first
lines) does not import torch.
"""

import importlib

_EXPORTS = {
    "LoadError": "explorer.errors",
    "LoadRequest": "explorer.models.loading",
    "LoadedModel": "explorer.models.loading",
    "load_model": "explorer.models.loading",
    "ModelCard": "explorer.models.card",
    "build_card": "explorer.models.card",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'explorer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
