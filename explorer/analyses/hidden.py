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


@dataclass(frozen=True)
class Lens:
    positions: tuple[int, ...]
    top_ids: np.ndarray  # [layer+1, pos, top]
    top_probs: np.ndarray  # [layer+1, pos, top]
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # [layer+1][pos][top]


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
    ids = np.zeros((n_states, len(positions), top), dtype=np.int64)
    probs = np.zeros((n_states, len(positions), top), dtype=np.float32)
    device = head.weight.device
    with loaded.lock, torch.inference_mode():
        for layer in range(n_states):
            h = torch.from_numpy(cap.hidden_states[layer, positions]).to(device, head.weight.dtype)
            if norm is not None and layer < n_states - 1:  # the last entry is already normed
                h = norm(h)
            logits = head(h).float()
            if cap_value:
                logits = torch.tanh(logits / cap_value) * cap_value
            p = torch.softmax(logits, dim=-1)
            values, index = p.topk(top, dim=-1)
            ids[layer], probs[layer] = index.cpu().numpy(), values.cpu().numpy()
    words = display_tokens(loaded.tokenizer, ids.reshape(-1).tolist())
    shaped = np.array(words, dtype=object).reshape(ids.shape)
    tokens = tuple(tuple(tuple(str(t) for t in cell) for cell in row) for row in shaped)
    return Lens(tuple(positions), ids, probs, tokens)
