"""Runs of a model: the one hooked forward pass, captures, generation step by step, export."""
