"""A capture as a NumPy .npz archive, for notebooks and other tools.

Keys for encoders and decoders: `tokens`, `token_ids`, `attentions` (float32 `[layer, head, q, k]`),
`hidden_states` (`[layer+1, pos, d_model]`). Encoder-decoders: `encoder_tokens`, `decoder_tokens`,
`encoder_token_ids`, `decoder_token_ids`, `encoder_attentions`, `decoder_attentions`,
`cross_attentions` (`[layer, head, tgt, src]`), `encoder_hidden_states`, `decoder_hidden_states`.
Both add `model` and `family`, and `windows` (each layer's sliding window, -1 for none).
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from explorer.runs.capture import Capture


def capture_arrays(cap: Capture) -> dict[str, np.ndarray]:
    arrays = {
        "model": np.array(cap.model_name),
        "family": np.array(cap.family),
        "windows": np.array([-1 if w is None else w for w in cap.windows], dtype=np.int64),
    }
    if cap.family == "encoder-decoder":
        arrays.update(
            encoder_tokens=np.array(cap.source.tokens, dtype=str),
            decoder_tokens=np.array(cap.sequence.tokens, dtype=str),
            encoder_token_ids=np.array(cap.source.ids, dtype=np.int64),
            decoder_token_ids=np.array(cap.sequence.ids, dtype=np.int64),
            encoder_attentions=cap.encoder_attentions,
            decoder_attentions=cap.attentions,
            cross_attentions=cap.cross_attentions,
            encoder_hidden_states=cap.encoder_hidden_states,
            decoder_hidden_states=cap.hidden_states,
        )
    else:
        arrays.update(
            tokens=np.array(cap.sequence.tokens, dtype=str),
            token_ids=np.array(cap.sequence.ids, dtype=np.int64),
            attentions=cap.attentions,
            hidden_states=cap.hidden_states,
        )
    return arrays


def write_npz(cap: Capture, target: str | BinaryIO) -> None:
    """Writes `cap` to a path or a binary file object (compressed)."""
    np.savez_compressed(target, **capture_arrays(cap))


def npz_bytes(cap: Capture) -> bytes:
    buf = io.BytesIO()
    write_npz(cap, buf)
    return buf.getvalue()
