"""Bring-your-own episodes: a folder of ``.npz`` files, one per episode, read as ``Episode``s.

Each file holds ``actions`` [T, D] (or ``action``), ``instruction`` (a string; or ``language_instruction``),
optional ``states`` [T, S] (or ``state``), one ``images.<camera>`` uint8 [T, H, W, 3] per camera and any
``extra.<name>`` [T, ...] arrays, e.g.::

    np.savez(f"ep_{i:05d}.npz", actions=a, states=s, instruction="pick up the cup",
             **{"images.image": frames, "images.wrist": wrist_frames})

Files are read in name order. Episodes without an instruction are skipped and listed in ``skipped``.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from openvla.data.episodes import Episode


def _first(data: np.lib.npyio.NpzFile, *keys: str) -> np.ndarray | None:
    return next((data[k] for k in keys if k in data.files), None)


class RawEpisodes:
    """Episodes from a folder of ``.npz`` files (see the module docstring for the keys)."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.folder = Path(folder)
        self.files = sorted(self.folder.glob("*.npz"))
        if not self.files:
            raise FileNotFoundError(f"{self.folder}: no .npz episode files")
        self.name = name or self.folder.resolve().name
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> Episode:
        """The episode in the ``index``-th file (ValueError naming the file when it is unreadable)."""
        path = self.files[index]
        try:
            with np.load(path, allow_pickle=False) as data:
                actions = _first(data, "actions", "action")
                if actions is None:
                    raise ValueError(f"{path}: no 'actions' array")
                text = _first(data, "instruction", "language_instruction")
                states = _first(data, "states", "state")
                images = {k[len("images."):]: data[k] for k in data.files if k.startswith("images.")}
                extra = {k[len("extra."):]: data[k] for k in data.files if k.startswith("extra.")}
        except (OSError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path}: corrupt or truncated .npz file: {err}") from err
        instruction = "" if text is None else str(text.reshape(-1)[0]) if text.size else ""
        episode = Episode(images=images, actions=actions.astype(np.float32), instruction=instruction.strip(),
                          states=None if states is None else states.astype(np.float32),
                          episode_index=index, dataset_name=self.name, extra=extra)
        try:
            episode.validate()
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        return episode

    def __iter__(self) -> Iterator[Episode]:
        for i, path in enumerate(self.files):
            episode = self.read(i)
            if not episode.instruction:
                self.skipped.append(f"{path}: no instruction")
                warnings.warn(f"{path}: skipped, no instruction", stacklevel=2)
                continue
            yield episode
