"""Helpers for the data tests: the shared fixtures folder and synthetic episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openvla.data.episodes import Episode

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"


def make_episode(index: int, length: int, rng: np.random.Generator, cameras=("image", "wrist"), size=(24, 32),
                 state_dim: int | None = 5, action_dim: int = 7, instruction: str | None = None) -> Episode:
    """A random episode with smooth-ish images (so PNG/video behave like real frames)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    images = {}
    for c, cam in enumerate(cameras):
        base = np.stack([(xx * 7 + c * 40) % 256, (yy * 5) % 256, (xx + yy) * 3 % 256], -1)
        shift = np.arange(length)[:, None, None, None] * 9
        noise = rng.integers(0, 20, (length, h, w, 3))
        images[cam] = ((base[None] + shift + noise) % 256).astype(np.uint8)
    return Episode(
        images=images,
        actions=rng.normal(size=(length, action_dim)).astype(np.float32),
        instruction=f"task {index % 3}" if instruction is None else instruction,
        states=None if state_dim is None else rng.normal(size=(length, state_dim)).astype(np.float32),
        episode_index=index,
        dataset_name="synthetic",
    )


def make_episodes(n: int, seed: int = 0, lengths=None, **kw) -> list[Episode]:
    rng = np.random.default_rng(seed)
    lengths = lengths or [5 + (i * 3) % 7 for i in range(n)]
    return [make_episode(i, lengths[i], rng, **kw) for i in range(n)]
