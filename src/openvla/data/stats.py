"""Per-dataset action/proprio statistics in the reference ``dataset_statistics.json`` layout.

Statistics stream over the data in bounded memory: mean/std/min/max are exact (Chan's parallel update in
float64), and the 1st/99th percentiles are exact while the dataset has at most ``reservoir`` transitions;
past that they are estimated from a uniform reservoir sample of that many transitions (Algorithm R, seeded),
whose rank error is about ``sqrt(q (1 - q) / reservoir)``: 1e-4 for q01 with the default one million.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openvla.data.episodes import Episode

STATISTICS_FILE = "dataset_statistics.json"
DEFAULT_RESERVOIR = 1_000_000


class RunningStats:
    """Streaming statistics over the rows of [N, D] arrays fed in pieces with ``update``."""

    def __init__(self, reservoir: int = DEFAULT_RESERVOIR, seed: int = 0):
        self.reservoir = int(reservoir)
        self.count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._chunks: list[np.ndarray] = []  # every row, until the reservoir is full
        self._sample: np.ndarray | None = None  # the reservoir, once more rows than it holds were seen
        self._rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int | None:
        return None if self._mean is None else int(self._mean.shape[0])

    def update(self, rows: np.ndarray) -> None:
        """Add rows [n, D] (or [n] for a scalar feature)."""
        x = np.asarray(rows)
        x = x.reshape(x.shape[0], -1)
        n = x.shape[0]
        if n == 0:
            return
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"rows have {x.shape[1]} dimensions, earlier rows had {self._mean.shape[0]}")
        x64 = x.astype(np.float64)
        mean_b = x64.mean(axis=0)
        m2_b = ((x64 - mean_b) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._m2 = mean_b, m2_b
            self._min, self._max = x64.min(axis=0), x64.max(axis=0)
        else:
            total = self.count + n
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (n / total)
            self._m2 = self._m2 + m2_b + delta**2 * (self.count * n / total)
            self._min = np.minimum(self._min, x64.min(axis=0))
            self._max = np.maximum(self._max, x64.max(axis=0))
        self._keep(x.astype(np.float32, copy=False))
        self.count += n

    def _keep(self, x: np.ndarray) -> None:
        """Keep every row while they fit in the reservoir, then a uniform sample (Algorithm R)."""
        start = self.count
        if self._sample is None:
            room = self.reservoir - start
            if x.shape[0] <= room:
                self._chunks.append(x.copy())
                return
            self._chunks.append(x[:room].copy())
            self._sample = np.concatenate(self._chunks)
            self._chunks = []
            x, start = x[room:], start + room
        seen = start + np.arange(x.shape[0]) + 1  # 1-based position of each new row
        slots = (self._rng.random(x.shape[0]) * seen).astype(np.int64)
        keep = slots < self.reservoir
        self._sample[slots[keep]] = x[keep]

    def rows(self) -> np.ndarray:
        """Every row seen (or the reservoir sample once there were more rows than it holds)."""
        if self._sample is not None:
            return self._sample
        return np.concatenate(self._chunks) if self._chunks else np.zeros((0, self.dim or 0), np.float32)

    def result(self, quantiles: Sequence[float] = (0.01, 0.99)) -> dict[str, np.ndarray]:
        """mean, std (population), min, max and ``qNN`` for each requested quantile, as float64 arrays."""
        if self.count == 0:
            raise ValueError("no rows were added")
        out = {"mean": self._mean, "std": np.sqrt(np.maximum(self._m2 / self.count, 0.0)),
               "max": self._max, "min": self._min}
        sample = self.rows().astype(np.float64)
        for q in quantiles:
            out[f"q{round(q * 100):02d}"] = np.quantile(sample, q, axis=0)
        return out


def default_action_mask(action_dim: int) -> list[bool]:
    """The reference mask: normalise every dimension except the last one (the gripper)."""
    return [True] * (action_dim - 1) + [False]


def _stats_block(stats: RunningStats, mask: Sequence[bool] | None) -> dict[str, Any]:
    r = stats.result()
    block: dict[str, Any] = {k: r[k].tolist() for k in ("mean", "std", "max", "min", "q01", "q99")}
    if mask is not None:
        block["mask"] = [bool(m) for m in mask]
    return block


def _zero_block(dim: int) -> dict[str, Any]:
    return {k: [0.0] * dim for k in ("mean", "std", "max", "min", "q01", "q99")}


def compute_statistics(
    source: Any,
    name: str | None = None,
    action_mask: Sequence[bool] | None = None,
    reservoir: int = DEFAULT_RESERVOIR,
    progress: bool = False,
) -> dict[str, Any]:
    """Statistics of a dataset (a ``LeRobotDataset`` or an iterable of ``Episode``) keyed by its name.

    Returns ``{name: {"action": {mean,std,max,min,q01,q99,mask}, "proprio": {...}, "num_transitions",
    "num_trajectories"}}``. ``action_mask`` defaults to every dimension but the last (the gripper). When the
    data has no proprio state, the proprio block holds zero vectors of the action size, as the reference's.
    """
    actions, states = RunningStats(reservoir), RunningStats(reservoir)
    if hasattr(source, "actions") and hasattr(source, "num_episodes"):  # a LeRobotDataset: no image decoding
        name = name or source.name
        num_trajectories = source.num_episodes
        step = 65536
        for i in range(0, source.num_frames, step):
            actions.update(source.actions[i : i + step])
            if source.states is not None:
                states.update(source.states[i : i + step])
    else:
        num_trajectories = 0
        episodes: Iterable[Episode] = source
        if progress:
            from tqdm import tqdm

            episodes = tqdm(episodes, desc=f"statistics {name}", unit="episode")
        for ep in episodes:
            where = f"episode {ep.episode_index} of {ep.dataset_name!r}"
            if actions.dim is not None and ep.actions.shape[-1] != actions.dim:
                raise ValueError(f"{where}: action size {ep.actions.shape[-1]} differs from earlier episodes "
                                 f"({actions.dim})")
            actions.update(ep.actions)
            if ep.states is not None:
                if states.dim is not None and ep.states.shape[-1] != states.dim:
                    raise ValueError(f"{where}: state size {ep.states.shape[-1]} differs from earlier "
                                     f"episodes ({states.dim})")
                states.update(ep.states)
            num_trajectories += 1
            name = name or ep.dataset_name
    return {name or "default": statistics_entry(actions, states, action_mask, num_trajectories,
                                                 name or "default")}


def statistics_entry(actions: RunningStats, states: RunningStats, action_mask: Sequence[bool] | None,
                     num_trajectories: int, name: str = "default") -> dict[str, Any]:
    """One dataset's entry of dataset_statistics.json from its streamed action and proprio statistics."""
    if actions.count == 0:
        raise ValueError(f"cannot compute statistics of an empty dataset {name!r}: it has no transitions")
    dim = actions.dim
    mask = list(action_mask) if action_mask is not None else default_action_mask(dim)
    if len(mask) != dim:
        raise ValueError(f"action mask has {len(mask)} entries for {dim} action dimensions")
    proprio = _stats_block(states, None) if states.count else _zero_block(dim)
    return {"action": _stats_block(actions, mask), "proprio": proprio,
            "num_transitions": int(actions.count), "num_trajectories": int(num_trajectories)}


def _cache_path(root: Path) -> Path:
    """Where statistics of a read-only dataset go: a per-user cache keyed by the dataset's path and info."""
    base = Path(os.environ.get("OPENVLA_CACHE_DIR") or Path.home() / ".cache" / "openvla") / "statistics"
    info = root / "meta" / "info.json"
    key = str(root.resolve()) + (info.read_text() if info.exists() else "")
    return base / f"{STATISTICS_FILE[:-5]}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def statistics_path(root: str | Path) -> Path:
    """The cache file beside the data: ``<root>/meta/dataset_statistics.json``."""
    return Path(root) / "meta" / STATISTICS_FILE


def load_or_compute_statistics(
    root: Any,
    name: str | None = None,
    recompute: bool = False,
    action_mask: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Statistics of the LeRobot dataset at ``root`` (a path or an open dataset), cached next to the data.

    The cache is ``meta/dataset_statistics.json``; when the dataset folder is read-only it falls back to
    ``$OPENVLA_CACHE_DIR`` (default ``~/.cache/openvla``). A cache whose transition count disagrees with
    the data, or whose mask differs from an explicit ``action_mask``, is recomputed.
    """
    from openvla.data.lerobot import LeRobotDataset

    dataset = root if isinstance(root, LeRobotDataset) else LeRobotDataset(root)
    name = name or dataset.name
    for path in (statistics_path(dataset.root), _cache_path(dataset.root)):
        if recompute or not path.exists():
            continue
        cached = json.loads(path.read_text())
        if len(cached) != 1:
            continue
        entry = next(iter(cached.values()))
        stale = entry.get("num_transitions") != dataset.num_frames or (
            action_mask is not None and entry["action"].get("mask") != [bool(m) for m in action_mask])
        if not stale:
            return {name: entry}
    stats = compute_statistics(dataset, name, action_mask=action_mask)
    save_statistics(stats, dataset.root)
    return stats


def _writable(folder: Path) -> bool:
    """Whether we may add a file to ``folder``: its owner-write bit is set (even for root) and access allows."""
    try:
        return bool(folder.stat().st_mode & stat.S_IWUSR) and os.access(folder, os.W_OK)
    except OSError:
        return False


def save_statistics(stats: dict[str, Any], root: str | Path) -> Path:
    """Write statistics beside the data, or to the user cache when the dataset folder is read-only."""
    text = json.dumps(stats, indent=2)
    path = statistics_path(root)
    if _writable(path.parent):
        try:
            path.write_text(text)
            return path
        except OSError:
            pass
    path = _cache_path(Path(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
