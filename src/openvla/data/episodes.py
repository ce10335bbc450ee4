"""The episode schema every reader produces and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """One demonstration: T steps of camera images, optional proprio, actions and an instruction.

    ``images`` maps a camera name (e.g. ``"image"``, ``"wrist"``) to a uint8 array [T, H, W, 3];
    ``actions`` is float32 [T, D]; ``states`` is float32 [T, S] or None. ``instruction`` is the episode's
    (first) task; ``instructions`` gives one per step when the task changes within the episode (LeRobot
    stores a task per frame), else None.
    """

    images: dict[str, np.ndarray]
    actions: np.ndarray
    instruction: str
    states: np.ndarray | None = None
    episode_index: int = 0
    dataset_name: str = "default"
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    instructions: list[str] | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def step_instructions(self) -> list[str]:
        """The instruction of every step: ``instructions`` when given, else ``instruction`` repeated."""
        return list(self.instructions) if self.instructions is not None else [self.instruction] * len(self)

    def validate(self) -> None:
        """Raise ValueError naming the episode when its arrays disagree in length, dtype or rank."""
        n = len(self)
        where = f"episode {self.episode_index} of {self.dataset_name!r}"
        if self.actions.ndim != 2:
            raise ValueError(f"{where}: actions must be [T, D], got shape {self.actions.shape}")
        for cam, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"{where}: camera {cam!r} must be uint8 [T, H, W, 3], got "
                                 f"{frames.dtype} {frames.shape}")
            if frames.shape[0] != n:
                raise ValueError(f"{where}: camera {cam!r} has {frames.shape[0]} frames for {n} actions")
        if self.states is not None and self.states.shape[0] != n:
            raise ValueError(f"{where}: {self.states.shape[0]} states for {n} actions")
        if self.instructions is not None and len(self.instructions) != n:
            raise ValueError(f"{where}: {len(self.instructions)} step instructions for {n} actions")
