"""Hidden states: their size, how much each layer turns them, and what they would predict (logit lens).

`hidden_states` is `[layer+1, pos, d_model]` as transformers returns it: entry 0 is the embedding
output, entry l the output of block l. For models with a final norm (GPT-2, Llama, Gemma ...) the last
entry is taken after that norm, which is what the unembedding reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analyses.tokens import display_tokens
from explorer.errors import InputError
from explorer.models import anatomy
from explorer.models.styles import FINAL_NORMS
from explorer.runs.capture import Capture

LENS_MAX_POSITIONS = 32
LENS_FIRST = 8  # positions the logit lens opens on: the last ones, ending with the model's prediction
LENS_TOP = 5


def norms(hidden: np.ndarray) -> np.ndarray:
    """L2 norm of each position at each layer: [layer+1, pos]."""
    return np.linalg.norm(hidden.astype(np.float64), axis=-1).astype(np.float32)


def consecutive_cosine(hidden: np.ndarray) -> np.ndarray:
    """Cosine similarity of each position between the input and the output of each block: [layer, pos].
    Near 1: the block barely turned the vector; low: it rewrote it."""
    a, b = hidden[:-1].astype(np.float64), hidden[1:].astype(np.float64)
    dot = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (dot / np.maximum(den, 1e-30)).astype(np.float32)


LENS_ROWS = 128  # hidden states unembedded at once: Gemma's 262k-word logits of 128 rows take 134 MB


@dataclass(frozen=True)
class Lens:
    positions: tuple[int, ...]
    top_ids: np.ndarray  # [layer+1, pos, top]
    top_probs: np.ndarray  # [layer+1, pos, top]
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # [layer+1][pos][top]

    def at(self, positions: list[int]) -> Lens:
        """These positions' columns (each must be in `self.positions`), in the order given."""
        cols = [self.positions.index(p) for p in positions]
        return Lens(
            tuple(positions),
            self.top_ids[:, cols],
            self.top_probs[:, cols],
            tuple(tuple(row[c] for c in cols) for row in self.top_tokens),
        )

    @staticmethod
    def join(parts: list[Lens]) -> Lens:
        """The columns of `parts` side by side."""
        return Lens(
            tuple(p for part in parts for p in part.positions),
            np.concatenate([part.top_ids for part in parts], axis=1),
            np.concatenate([part.top_probs for part in parts], axis=1),
            tuple(
                tuple(cell for part in parts for cell in part.top_tokens[layer])
                for layer in range(parts[0].top_ids.shape[0])
            ),
        )


def final_norm(model):
    """The norm applied before the unembedding (the last stack's, from the model's anatomy), or None when
    the model has none. Models the anatomy refuses: found by its usual names."""
    try:
        found = anatomy.of(model)
    except anatomy.UnsupportedModel:
        found = None
    if found is not None:
        return found.stacks[found.output_stack].final_norm
    base = model.base_model
    for holder in (base, getattr(base, "decoder", None)):
        for name in FINAL_NORMS:
            module = getattr(holder, name, None) if holder is not None else None
            if isinstance(module, torch.nn.Module):
                return module
    return None


def unembed_top(
    head: torch.nn.Module, rows: torch.Tensor, top: int, softcap: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top` most likely next tokens of each residual-stream row (already through the final norm) under
    the LM head `head` (and logit soft-capping): (probabilities, ids), each (rows, top), on the CPU. The
    rows go through in chunks: the unembedding, the largest matrix of a small model, is read once per
    chunk instead of once per row group (the logit lens: three times faster on Gemma 3)."""
    probs = torch.zeros(len(rows), top)
    ids = torch.zeros(len(rows), top, dtype=torch.int64)
    for start in range(0, len(rows), LENS_ROWS):
        logits = head(rows[start : start + LENS_ROWS]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        values, index = logits.topk(top, dim=-1)
        probs[start : start + LENS_ROWS] = (values - logits.logsumexp(-1, keepdim=True)).exp().cpu()
        ids[start : start + LENS_ROWS] = index.cpu()
    return probs, ids


def logit_lens(loaded, cap: Capture, positions: list[int], top: int = LENS_TOP) -> Lens:
    """What each layer's hidden state at `positions` would predict if it were the last layer: the
    model's own final norm and unembedding (and logit soft-capping, where the config has it) applied
    to it. The last layer's entry is the model's real prediction."""
    if cap.family != "decoder":
        raise InputError("The logit lens reads a decoder's hidden states through its unembedding; "
                         "load a decoder (SmolLM2, Gemma, GPT-2 ...).")  # fmt: skip
    model = loaded.model
    head = model.get_output_embeddings()
    if head is None:
        raise InputError(f"{cap.model_name} has no language-model head to read hidden states with.")
    if not positions:
        raise InputError("Choose at least one position.")
    if len(positions) > LENS_MAX_POSITIONS:
        raise InputError(f"The logit lens reads at most {LENS_MAX_POSITIONS} positions at a time.")
    norm = final_norm(model)
    cap_value = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    n_states = cap.hidden_states.shape[0]
    with loaded.lock, torch.inference_mode():
        h = torch.from_numpy(cap.hidden_states[:, positions]).to(head.weight.device, head.weight.dtype)
        if norm is not None:  # the last entry is already normed
            h = torch.cat([norm(h[:-1]), h[-1:]])
        probs, ids = unembed_top(head, h.reshape(-1, h.shape[-1]), top, cap_value)
    ids_np = ids.numpy().reshape(n_states, len(positions), top)
    probs_np = probs.numpy().reshape(n_states, len(positions), top)
    words = display_tokens(loaded.tokenizer, ids_np.reshape(-1).tolist())
    shaped = np.array(words, dtype=object).reshape(ids_np.shape)
    tokens = tuple(tuple(tuple(str(t) for t in cell) for cell in row) for row in shaped)
    return Lens(tuple(positions), ids_np, probs_np, tokens)
