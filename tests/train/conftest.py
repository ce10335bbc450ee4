"""A small synthetic dataset in our format: a coloured square's position and the task decide the action."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from openvla.data.episodes import Episode

TASKS = ["move to the red square", "move away from the red square"]


def make_episode(rng: np.random.Generator, index: int, steps: int = 6, size: int = 32) -> Episode:
    task = index % 2
    images = np.zeros((steps, size, size, 3), np.uint8)
    actions = np.zeros((steps, 4), np.float32)
    states = np.zeros((steps, 3), np.float32)
    for t in range(steps):
        x, y = rng.integers(2, size - 8, 2)
        images[t, y:y + 6, x:x + 6, 0] = 255
        direction = np.array([x, y], np.float32) / size - 0.5
        actions[t, :2] = direction if task == 0 else -direction
        actions[t, 2] = rng.normal(0, 0.05)
        actions[t, 3] = float(task)
        states[t] = [x / size, y / size, t / steps]
    return Episode(images={"image": images}, actions=actions, instruction=TASKS[task], states=states,
                   episode_index=index)


def write_toy_dataset(root: Path, episodes: int = 12, seed: int = 0, action_dim: int = 4) -> Path:
    """The toy episodes; ``action_dim`` > 4 pads the actions with zeros."""
    from openvla.data.lerobot import LeRobotWriter

    rng = np.random.default_rng(seed)
    with LeRobotWriter(root, fps=10) as writer:
        for i in range(episodes):
            episode = make_episode(rng, i)
            episode.actions = np.pad(episode.actions, ((0, 0), (0, action_dim - 4)))
            writer.add_episode(episode)
    return root


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("data") / "toy")


@pytest.fixture(scope="session")
def dataset_writer():
    """``write_toy_dataset`` for tests that need another dataset (other size, other action dimension)."""
    return write_toy_dataset
