"""Sparse autoencoders on a model's residual stream: the autoencoder itself in SAELens' file layout
(`sae`), the corpus the project trains its own on (`corpus`), training (`python -m explorer.sae.train`)
and what the pages read from one (`features`)."""
