"""Transformer Explorer: load transformer checkpoints and look inside them.

The library is usable without Streamlit: `explorer.loading.load_model` returns a `LoadedModel`
with its `ModelCard`; `python -m explorer --help` is the command line over the same calls.
"""

from explorer.card import ModelCard, build_card
from explorer.errors import LoadError
from explorer.loading import LoadedModel, LoadRequest, load_model

__all__ = ["LoadError", "LoadRequest", "LoadedModel", "ModelCard", "build_card", "load_model"]
