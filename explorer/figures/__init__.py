"""Plotly figures: pure functions from arrays to figures, testable without a browser."""
