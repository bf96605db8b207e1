"""Transformer Explorer: load transformer checkpoints and look inside them.

The library is usable without Streamlit: `explorer.models.loading.load_model` returns a `LoadedModel`
with its `ModelCard`; `python -m explorer --help` is the command line over the same calls.
"""

from explorer.errors import LoadError
from explorer.models.card import ModelCard, build_card
from explorer.models.loading import LoadedModel, LoadRequest, load_model

__all__ = ["LoadError", "LoadRequest", "LoadedModel", "ModelCard", "build_card", "load_model"]
