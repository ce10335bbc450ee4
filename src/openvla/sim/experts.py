"""Policies that need no model: Meta-World's scripted experts and a uniform random policy."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from openvla.policy import Observation


class ExpertPolicy:
    """Meta-World's scripted expert for the observed task; reads the privileged ``sim_state``."""

    def __init__(self) -> None:
        self._experts: dict[str, Any] = {}

    def reset(self) -> None:
        """The experts are stateless."""

    def act(self, observation: Observation) -> np.ndarray:
        """One 4-D action as a chunk of length 1."""
        if "sim_state" not in observation or "task" not in observation:
            raise ValueError("the scripted expert needs a Meta-World observation with 'task' and 'sim_state'")
        task = observation["task"]
        if task not in self._experts:
            from metaworld.policies import ENV_POLICY_MAP

            self._experts[task] = ENV_POLICY_MAP[task]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            action = self._experts[task].get_action(observation["sim_state"])
        return np.clip(action, -1.0, 1.0).astype(np.float32)[None]


class RandomPolicy:
    """Uniform random actions in [-1, 1]: the floor every success rate is compared against."""

    def __init__(self, action_dim: int = 4, chunk_size: int = 1, seed: int = 0):
        self.action_dim = action_dim
        self.chunk_size = chunk_size
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, observation: Observation) -> np.ndarray:
        """A [chunk_size, action_dim] chunk of uniform random actions."""
        return self._rng.uniform(-1.0, 1.0, (self.chunk_size, self.action_dim)).astype(np.float32)
