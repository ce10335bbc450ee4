"""Action/proprio normalisation to [-1, 1] from dataset statistics, and its inverse for predictions.

Follows the reference (``normalize_action_and_proprio``):
* ``bounds_q99`` (default) and ``bounds``: ``clip(2 (x - low) / (high - low + 1e-8) - 1, -1, 1)`` with
  low/high = q01/q99 or min/max, only where ``mask`` is set; then dimensions with min == max become 0.
* ``normal``: ``(x - mean) / (std + 1e-8)`` where ``mask`` is set, not clipped (as the reference; pass
  ``clip=True`` to clip it too).
The inverse of the bounds modes is the reference's ``0.5 (y + 1) (high - low) + low``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODES = ("bounds_q99", "bounds", "normal")


class Normalizer:
    """Normalise actions and proprio of one dataset with its statistics (a ``dataset_statistics`` entry)."""

    def __init__(self, stats: dict[str, Any], mode: str = "bounds_q99", clip: bool | None = None):
        if "action" not in stats and len(stats) == 1:  # accept the whole {name: {...}} file too
            stats = next(iter(stats.values()))
        if "action" not in stats:
            raise KeyError("statistics have no 'action' entry")
        self.mode = mode.lower()
        if self.mode not in MODES:
            raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {MODES}")
        self.clip = self.mode != "normal" if clip is None else clip
        self.stats = stats
        self._action = self._prepare(stats["action"])
        self._proprio = self._prepare(stats["proprio"]) if "proprio" in stats else None

    def _prepare(self, block: dict[str, Any]) -> dict[str, np.ndarray]:
        arr = {k: np.asarray(v, dtype=np.float32) for k, v in block.items() if k != "mask"}
        exact = {k: np.asarray(v, dtype=np.float64) for k, v in block.items() if k != "mask"}
        dim = next(iter(arr.values())).shape[0]
        mask = np.asarray(block.get("mask", [True] * dim), dtype=bool)
        if self.mode == "normal":
            low, scale = arr["mean"], arr["std"] + np.float32(1e-8)
            inverse = (exact["mean"], exact["std"] + 1e-8)
        else:
            names = ("q01", "q99") if self.mode == "bounds_q99" else ("min", "max")
            low, high = arr[names[0]], arr[names[1]]
            scale = (high - low + np.float32(1e-8)) / 2
            inverse = (exact[names[0]], exact[names[1]] - exact[names[0]])
        const = arr["min"] == arr["max"] if "min" in arr and "max" in arr else np.zeros(dim, dtype=bool)
        return {"mask": mask, "low": low, "scale": scale, "const": const, "inverse": inverse}

    def _forward(self, x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != p["mask"].shape[0]:
            raise ValueError(f"got {x.shape[-1]} dimensions, statistics have {p['mask'].shape[0]}")
        y = (x - p["low"]) / p["scale"]
        if self.mode != "normal":
            y = y - 1
        if self.clip:
            y = np.clip(y, -1, 1)
        y = np.where(p["mask"], y, x)
        if self.mode != "normal":
            y = np.where(p["const"], np.float32(0), y)
        return y.astype(np.float32, copy=False)

    def _inverse(self, y: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        """In float64, as the reference un-normalises: ``0.5 (y + 1) (high - low) + low`` or ``y std + mean``."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape[-1] != p["mask"].shape[0]:
            raise ValueError(f"got {y.shape[-1]} dimensions, statistics have {p['mask'].shape[0]}")
        low, span = p["inverse"]
        x = y * span + low if self.mode == "normal" else 0.5 * (y + 1) * span + low
        return np.where(p["mask"], x, y)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Actions [..., D] to the model's [-1, 1] range."""
        return self._forward(actions, self._action)

    def unnormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """Model outputs [..., D] back to robot units (the inverse of ``normalize_actions``)."""
        return self._inverse(actions, self._action)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """Proprio [..., S] to [-1, 1] (every dimension; proprio has no mask)."""
        if self._proprio is None:
            raise KeyError("statistics have no 'proprio' entry")
        return self._forward(state, self._proprio)

    def unnormalize_state(self, state: np.ndarray) -> np.ndarray:
        """The inverse of ``normalize_state``."""
        if self._proprio is None:
            raise KeyError("statistics have no 'proprio' entry")
        return self._inverse(state, self._proprio)
