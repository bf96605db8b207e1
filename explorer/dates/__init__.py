"""The embedded date normalizer: its data and its training (weights in explorer/weights/)."""
