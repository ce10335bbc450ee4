"""`openvla fast-tokenizer`: train the FAST head's tokenizer on a dataset's action chunks, normalised exactly as
training normalises them; `openvla train` calls ``fit_for_model`` itself when a fast model has none yet."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from openvla.model.fast_tokenizer import FastTokenizer, report

SCALES = (400, 320, 256, 200, 160, 128, 100, 80, 64, 50, 40, 32, 25, 20, 16, 12, 10, 8, 6, 5, 4, 3, 2, 1)
MERGE_SHARE = 0.25  # of the vocabulary kept for BPE merges: without merges FAST does not compress


def dataset_chunks(datasets: Sequence[Any], statistics: dict[str, Any], normalization: str, chunk: int
                   ) -> np.ndarray:
    """Every frame's normalised action chunk [N, chunk, D], padded at the episode's end by repeating its last
    action, as the training loader does."""
    from openvla.data.normalize import Normalizer

    out = []
    for ds in datasets:
        norm = Normalizer(statistics[ds.name], normalization)
        starts = np.arange(ds.num_frames)
        ends = np.array([ds.episode_bounds(int(f))[1] for f in starts])
        idx = np.minimum(starts[:, None] + np.arange(chunk)[None], ends[:, None] - 1)
        out.append(norm.normalize_actions(ds.actions[idx]))
    return np.concatenate(out).astype(np.float64)


def bins_max_error(chunks: np.ndarray, n_action_bins: int = 256) -> float:
    """The largest round-trip error of OpenVLA's ``n_action_bins`` bins on these chunks (half a bin)."""
    from openvla.model.action_tokenizer import ActionTokenizer

    bins = ActionTokenizer(n_action_bins + 1, n_action_bins)
    chunks = np.clip(chunks, -1, 1)
    return float(np.abs(bins.decode(bins.encode(chunks)) - chunks).max())


def auto_scale(chunks: np.ndarray, vocab_size: int) -> float:
    """The coarsest scale whose round trip is within the 256-bin tokenizer's error on every value of these chunks
    (FAST then loses no more than OpenVLA's bins), among those whose coefficient symbols leave MERGE_SHARE of
    the vocabulary to merges; when none is that fine, the finest that fits, with a warning."""
    from scipy.fft import dct, idct

    chunks = np.clip(chunks, -1, 1)
    coeffs = dct(chunks, axis=1, norm="ortho")
    target, budget = bins_max_error(chunks), int(vocab_size * (1 - MERGE_SHARE))
    finest = None
    for scale in reversed(SCALES):  # coarse to fine
        q = np.round(coeffs * scale)
        if q.max() - q.min() + 1 > budget:
            break
        finest = scale
        if np.abs(np.clip(idct(q / scale, axis=1, norm="ortho"), -1, 1) - chunks).max() <= target:
            return float(scale)
    if finest is None:
        raise ValueError(f"a vocabulary of {vocab_size} tokens is too small for these chunks; raise it")
    warnings.warn(f"FAST with {vocab_size} tokens: scale {finest} is the finest that fits, and its round trip "
                  f"exceeds the 256-bin tokenizer's error ({target:.4f}) on some values; a larger vocabulary "
                  "(n_action_bins) allows a finer scale", stacklevel=2)
    return float(finest)


def fit(chunks: np.ndarray, vocab_size: int, scale: float | None = None) -> FastTokenizer:
    return FastTokenizer.fit(chunks, vocab_size, scale or auto_scale(chunks, vocab_size))


def fit_for_model(vla: Any, datasets: Sequence[Any]) -> dict[str, float]:
    """Train a fast model's tokenizer on ``datasets`` (its statistics already in the config) over the reserved
    action ids; returns the report on the data."""
    from openvla.model.heads.fast import FastHead

    cfg = vla.config
    chunks = dataset_chunks(datasets, cfg.norm_stats, cfg.action_normalization, cfg.action_chunk)
    codec = fit(chunks, cfg.n_action_bins)
    cfg.fast_tokenizer = codec.to_dict()
    FastHead.check_config(cfg)
    return report(codec, chunks)


def describe(stats: dict[str, float], codec: FastTokenizer) -> str:
    return (f"FAST tokenizer: {codec.vocab_size} tokens ({codec.n_symbols} coefficient symbols), scale "
            f"{codec.scale:g}, chunks ({codec.chunk}, {codec.dim}); on {stats['chunks']} chunks: "
            f"{stats['fast_tokens_per_chunk']:.2f} tokens per chunk (max {stats['fast_max_tokens_per_chunk']}) vs "
            f"{stats['binned_tokens_per_chunk']} binned, compression {stats['compression']:.2f}x; round-trip error "
            f"mean {stats['fast_mean_abs_error']:.4f} max {stats['fast_max_abs_error']:.4f} (256 bins: mean "
            f"{stats['bins_mean_abs_error']:.4f} max {stats['bins_max_abs_error']:.4f})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fast-tokenizer", help="train the FAST action tokenizer (DCT + BPE) on datasets' chunks")
    p.add_argument("--data", nargs="+", required=True, help="dataset folders (our LeRobot-format datasets)")
    p.add_argument("--out", required=True, help="JSON file; train with --set model='{\"action_head\": \"fast\", "
                                                "\"fast_tokenizer\": \"FILE\"}'")
    p.add_argument("--chunk", type=int, default=8, help="actions per chunk (the model's action_chunk)")
    p.add_argument("--vocab-size", type=int, default=256,
                   help="tokens, at most the model's n_action_bins (the ids it reserves for actions)")
    p.add_argument("--scale", type=float, default=None,
                   help="DCT coefficient scale before rounding (default: the coarsest whose round trip stays within "
                        "the 256-bin tokenizer's error, if the vocabulary has room for it)")
    p.add_argument("--normalization", default="bounds_q99", help="the model's action_normalization")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from openvla.data.lerobot import LeRobotDataset
    from openvla.data.stats import load_or_compute_statistics

    datasets = [LeRobotDataset(p) for p in args.data]
    stats = {ds.name: load_or_compute_statistics(ds)[ds.name] for ds in datasets}
    chunks = dataset_chunks(datasets, stats, args.normalization, args.chunk)
    codec = fit(chunks, args.vocab_size, args.scale)
    codec.save(args.out)
    result = report(codec, chunks)
    print(describe(result, codec))
    print(json.dumps(result))
    print(f"wrote {args.out}")
    return 0
