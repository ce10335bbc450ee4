"""Continuous actions <-> the last ``n_bins`` token ids of the vocabulary (OpenVLA's discretisation)."""

from __future__ import annotations

import numpy as np
import torch


class ActionTokenizer:
    """256 uniform bins on [-1, 1]; a higher value maps to a lower id; decoding returns bin centres."""

    def __init__(self, vocab_size: int, n_bins: int = 256) -> None:
        self.vocab_size = vocab_size  # tokenizer vocabulary without padding (32000 for Llama-2)
        self.n_bins = n_bins
        self.bins = np.linspace(-1.0, 1.0, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self._centers_t = torch.from_numpy(self.bin_centers)

    @property
    def begin_idx(self) -> int:
        """Token ids strictly greater than this are action tokens (31743 for OpenVLA)."""
        return self.vocab_size - (self.n_bins + 1)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions [..., D] -> token ids [..., D] (int64)."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, token_ids: torch.Tensor | np.ndarray) -> np.ndarray:
        """Token ids -> normalised actions (float64 bin centres); non-action ids clip to the end bins."""
        ids = torch.as_tensor(token_ids).long().cpu()
        idx = (self.vocab_size - ids - 1).clamp(0, self.n_bins - 2)
        return self._centers_t[idx].numpy()

    def decode_torch(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Like ``decode`` but stays on the ids' device (for training metrics)."""
        idx = (self.vocab_size - token_ids.long() - 1).clamp(0, self.n_bins - 2)
        return self._centers_t.to(token_ids.device)[idx]
