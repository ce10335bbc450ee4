"""Robot episode data: LeRobot (v2/v3) and RLDS/OXE readers, a writer, statistics, normalisation,
augmentation and a fast, resumable training loader. Import the submodules you need, e.g.
``from openvla.data.lerobot import LeRobotDataset`` (heavy dependencies stay out of ``import openvla.data``)."""

from openvla.data.episodes import Episode

__all__ = ["Episode"]
