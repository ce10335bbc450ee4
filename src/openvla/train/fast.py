"""`openvla fast-tokenizer`: train the FAST head's tokenizer on a dataset's action chunks, normalised exactly as
training normalises them; `openvla train` calls ``fit_for_model`` itself when a fast model has none yet."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from openvla.model.fast_tokenizer import FastTokenizer, bins_errors, report

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


def chunks_of(paths: Sequence[str], chunk: int, normalization: str = "bounds_q99") -> np.ndarray:
    """The normalised chunks of our dataset folders, with each dataset's own statistics (as training uses)."""
    from openvla.data.lerobot import LeRobotDataset
    from openvla.data.stats import load_or_compute_statistics

    datasets = [LeRobotDataset(p) for p in paths]
    stats = {ds.name: load_or_compute_statistics(ds)[ds.name] for ds in datasets}
    return dataset_chunks(datasets, stats, normalization, chunk)


def auto_scale(chunks: np.ndarray, vocab_size: int, match: str = "mean") -> float:
    """The coarsest scale whose round-trip error on these chunks is within the 256-bin tokenizer's: on average
    (``match="mean"``, the default: coarse symbols are what a model learns from few steps) or on every value
    (``"max"``: FAST then never loses more than a half bin, but needs ~5x the symbols). Only scales whose
    coefficient symbols leave MERGE_SHARE of the vocabulary to merges qualify; when none meets the error, the
    finest that fits, with a warning."""
    from scipy.fft import dct, idct

    if match not in ("mean", "max"):
        raise ValueError(f"match must be 'mean' or 'max', got {match!r}")
    chunks = np.clip(chunks, -1, 1)
    coeffs = dct(chunks, axis=1, norm="ortho")
    target, budget = bins_errors(chunks)[match], int(vocab_size * (1 - MERGE_SHARE))
    reduce = np.mean if match == "mean" else np.max
    finest = None
    for scale in reversed(SCALES):  # coarse to fine
        q = np.round(coeffs * scale)
        if q.max() - q.min() + 1 > budget:
            break
        finest = scale
        if reduce(np.abs(np.clip(idct(q / scale, axis=1, norm="ortho"), -1, 1) - chunks)) <= target:
            return float(scale)
    if finest is None:
        raise ValueError(f"a vocabulary of {vocab_size} tokens is too small for these chunks; raise it")
    warnings.warn(f"FAST with {vocab_size} tokens: scale {finest} is the finest that fits, and its {match} "
                  f"round-trip error exceeds the 256-bin tokenizer's ({target:.4f}); a larger vocabulary "
                  "(n_action_bins) allows a finer scale", stacklevel=2)
    return float(finest)


def fit(chunks: np.ndarray, vocab_size: int, scale: float | None = None, match: str = "mean") -> FastTokenizer:
    return FastTokenizer.fit(chunks, vocab_size, scale or auto_scale(chunks, vocab_size, match))


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
                   help="DCT coefficient scale before rounding (default: the coarsest whose round-trip error is "
                        "within the 256-bin tokenizer's, see --match-bins)")
    p.add_argument("--match-bins", choices=("mean", "max"), default="mean",
                   help="the automatic scale matches the 256-bin tokenizer's mean error (default) or its largest "
                        "error on every value (a far finer scale: more symbols, a larger vocabulary, harder to learn)")
    p.add_argument("--normalization", default="bounds_q99", help="the model's action_normalization")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    chunks = chunks_of(args.data, args.chunk, args.normalization)
    codec = fit(chunks, args.vocab_size, args.scale, args.match_bins)
    codec.save(args.out)
    result = report(codec, chunks)
    print(describe(result, codec))
    print(json.dumps(result))
    print(f"wrote {args.out}")
    return 0
