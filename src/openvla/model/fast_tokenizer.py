"""FAST (pi0-FAST's action tokenizer): a normalised chunk [T, D] -> per-dimension DCT (orthonormal) -> scaled and
rounded coefficients, flattened low frequency first (all dimensions' DC terms, then the next frequency, ...) ->
one symbol per coefficient -> a BPE trained on the dataset's chunks. Smooth chunks have few non-zero high
frequencies, so long runs of zeros merge into a few tokens.

The codec is plain data (``to_dict``/``from_dict``): it lives in ``VLAConfig.fast_tokenizer`` and so in every
checkpoint's ``vla_config.json``. Token k is the k-th BPE id; the head maps it onto the ids the LLM reserves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.fft import dct, idct

SYMBOL_BASE = 0x4E00  # coefficient symbols are CJK code points: printable, one char each, no normaliser touches them


class FastTokenizer:
    """DCT + scale + round + BPE over fixed-shape chunks [chunk, dim]; ``decode`` returns None when a token
    sequence is malformed (an id outside the vocabulary, or not exactly chunk * dim coefficients)."""

    def __init__(self, chunk: int, dim: int, scale: float, min_coeff: int, n_symbols: int, bpe_json: str | None):
        from tokenizers import Tokenizer

        self.chunk, self.dim, self.scale = int(chunk), int(dim), float(scale)
        self.min_coeff, self.n_symbols = int(min_coeff), int(n_symbols)
        self.bpe_json = bpe_json
        self._bpe = Tokenizer.from_str(bpe_json) if bpe_json else None
        if self._bpe is None:  # DCT only: token k is symbol k
            self._pieces = [chr(SYMBOL_BASE + k) for k in range(self.n_symbols)]
        else:
            vocab = self._bpe.get_vocab()
            self._pieces = [""] * len(vocab)
            for piece, k in vocab.items():
                self._pieces[k] = piece

    # ---------------------------------------------------------------------------------------- building
    @classmethod
    def untrained(cls, chunk: int, dim: int, vocab_size: int) -> FastTokenizer:
        """DCT only (no merges): ``vocab_size`` symbols centred on 0, scaled so no chunk in [-1, 1] clips
        (an orthonormal DCT coefficient is at most sqrt(chunk) in magnitude)."""
        half = vocab_size // 2
        return cls(chunk, dim, (half - 1) / math.sqrt(chunk), -half, vocab_size, None)

    @classmethod
    def fit(cls, chunks: np.ndarray, vocab_size: int, scale: float) -> FastTokenizer:
        """Train on normalised chunks [N, chunk, dim]: the symbols are every coefficient value seen, the rest of
        ``vocab_size`` becomes BPE merges."""
        from tokenizers import Tokenizer, models, trainers

        chunks = np.asarray(chunks, dtype=np.float64)
        if chunks.ndim != 3 or len(chunks) == 0:
            raise ValueError(f"FAST trains on chunks [N, chunk, dim], got shape {chunks.shape}")
        coeffs = _quantise(chunks, scale)
        lo, hi = int(coeffs.min()), int(coeffs.max())
        n_symbols = hi - lo + 1
        if n_symbols > vocab_size:
            raise ValueError(f"at scale {scale} the DCT coefficients take {n_symbols} values, more than the "
                             f"vocabulary's {vocab_size} tokens: lower the scale or raise the vocabulary size")
        alphabet = [chr(SYMBOL_BASE + k) for k in range(n_symbols)]
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False,
                                      max_token_length=chunks.shape[1] * chunks.shape[2])
        codec = cls(chunks.shape[1], chunks.shape[2], scale, lo, n_symbols, None)
        bpe.train_from_iterator((codec._text(c) for c in coeffs), trainer=trainer)
        return cls(chunks.shape[1], chunks.shape[2], scale, lo, n_symbols, bpe.to_str())

    def to_dict(self) -> dict[str, Any]:
        return {"chunk": self.chunk, "dim": self.dim, "scale": self.scale, "min_coeff": self.min_coeff,
                "n_symbols": self.n_symbols, "bpe": self.bpe_json}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FastTokenizer:
        try:
            return cls(data["chunk"], data["dim"], data["scale"], data["min_coeff"], data["n_symbols"],
                       data.get("bpe"))
        except KeyError as err:
            raise ValueError(f"the FAST tokenizer lacks {err}; retrain it with `openvla fast-tokenizer`") from None

    @classmethod
    def load(cls, path: str) -> FastTokenizer:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    # ---------------------------------------------------------------------------------------- coding
    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def max_tokens(self) -> int:
        """No chunk needs more tokens than coefficients (a BPE token covers at least one)."""
        return self.chunk * self.dim

    def _text(self, coeffs: np.ndarray) -> str:
        """Quantised coefficients [chunk, dim] -> one symbol each, low frequency first, clipped to the alphabet."""
        k = np.clip(coeffs.reshape(-1) - self.min_coeff, 0, self.n_symbols - 1)
        return "".join(chr(SYMBOL_BASE + int(v)) for v in k)

    def encode(self, actions: np.ndarray) -> list[int]:
        """A normalised chunk [chunk, dim] -> token ids in [0, vocab_size)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.chunk, self.dim):
            raise ValueError(f"this FAST tokenizer codes chunks of shape ({self.chunk}, {self.dim}), got "
                             f"{actions.shape}; retrain it for this action_chunk and action dimension")
        text = self._text(_quantise(np.clip(actions, -1, 1)[None], self.scale)[0])
        if self._bpe is None:
            return [ord(c) - SYMBOL_BASE for c in text]
        return list(self._bpe.encode(text).ids)

    def decode(self, tokens: Sequence[int], repair: bool = False) -> np.ndarray | None:
        """Token ids -> the chunk [chunk, dim] (float64, in [-1, 1]); None when the sequence is malformed: an id
        outside the vocabulary, or (unless ``repair``) not exactly chunk * dim coefficients. ``repair`` drops
        extra coefficients and fills missing ones with 0 (they are the highest frequencies)."""
        if not tokens or any(not 0 <= int(k) < self.vocab_size for k in tokens):
            return None
        text = "".join(self._pieces[int(k)] for k in tokens)
        n = self.chunk * self.dim
        if len(text) != n:
            if not repair:
                return None
            text = text[:n] + chr(SYMBOL_BASE - self.min_coeff) * (n - len(text))
        coeffs = np.array([ord(c) - SYMBOL_BASE + self.min_coeff for c in text], dtype=np.float64)
        chunk = idct(coeffs.reshape(self.chunk, self.dim) / self.scale, axis=0, norm="ortho")
        return np.clip(chunk, -1.0, 1.0)


def _quantise(chunks: np.ndarray, scale: float) -> np.ndarray:
    """[N, chunk, dim] -> rounded scaled orthonormal DCT coefficients along time, [N, chunk, dim] int64."""
    return np.round(dct(chunks, axis=1, norm="ortho") * scale).astype(np.int64)


def bins_errors(chunks: np.ndarray, n_action_bins: int = 256) -> dict[str, float]:
    """The mean and largest round-trip error of OpenVLA's ``n_action_bins`` bins on normalised chunks."""
    from openvla.model.action_tokenizer import ActionTokenizer

    bins = ActionTokenizer(n_action_bins + 1, n_action_bins)
    chunks = np.clip(np.asarray(chunks, dtype=np.float64), -1, 1)
    err = np.abs(bins.decode(bins.encode(chunks)) - chunks)
    return {"mean": float(err.mean()), "max": float(err.max())}


def report(codec: FastTokenizer, chunks: Iterable[np.ndarray], n_action_bins: int = 256) -> dict[str, float]:
    """Compression (binned tokens / FAST tokens per chunk) and round-trip errors of FAST and of OpenVLA's
    ``n_action_bins`` bins on the same normalised chunks."""
    chunks = np.clip(np.stack([np.asarray(c, dtype=np.float64) for c in chunks]), -1, 1)
    lengths, fast_err = [], []
    for chunk in chunks:
        tokens = codec.encode(chunk)
        lengths.append(len(tokens))
        fast_err.append(np.abs(codec.decode(tokens) - chunk))
    fast, binned = np.stack(fast_err), bins_errors(chunks, n_action_bins)
    mean_len = float(np.mean(lengths))
    return {"chunks": len(lengths), "binned_tokens_per_chunk": codec.chunk * codec.dim,
            "fast_tokens_per_chunk": mean_len, "fast_max_tokens_per_chunk": int(np.max(lengths)),
            "compression": codec.chunk * codec.dim / mean_len,
            "fast_mean_abs_error": float(fast.mean()), "fast_max_abs_error": float(fast.max()),
            "bins_mean_abs_error": binned["mean"], "bins_max_abs_error": binned["max"]}
