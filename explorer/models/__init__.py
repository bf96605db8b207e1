"""Models: loading any checkpoint, the embedded zoo, GGUF conversion, the card, devices, the shared
registry, and the anatomy (where every part of a model is)."""
