"""The one interface that evaluation and serving talk to: observation in, action chunk out."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = dict[str, Any]
"""An observation: ``{"image": uint8 HxWx3, "instruction": str}`` plus optional keys such as
``"wrist_image"`` (uint8 HxWx3) and ``"state"`` (float proprio vector)."""


@runtime_checkable
class Policy(Protocol):
    """Anything that acts: a local VLA, a remote server client, a scripted expert, a random policy."""

    def reset(self) -> None:
        """Forget any per-episode state (called at the start of every episode)."""

    def act(self, observation: Observation) -> np.ndarray:
        """Return an action chunk of shape [T, D] (T >= 1) in the environment's action units."""
