"""Conversion of RLDS/TFDS, raw ``.npz`` folders and LeRobot v2/v3 datasets into our LeRobot v3.0 format."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openvla.data.episodes import Episode

DEFAULT_FPS = 10


@dataclass
class ConvertResult:
    """What a conversion wrote and what it skipped (each skipped episode with its reason)."""

    path: Path
    episodes: int
    frames: int
    skipped: list[str] = field(default_factory=list)


def _open_lerobot(src: Path, name: str | None, cameras: Sequence[str] | None, **_: Any) -> tuple[Any, dict]:
    from openvla.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(src, name=name)
    episodes = (ds.episode(i, cameras) for i in range(ds.num_episodes))
    return _Wrapped(episodes, ds.name, ds.num_episodes), {"fps": ds.fps, "robot_type": ds.info.get("robot_type")}


def _open_rlds(src: Path, name: str | None, cameras: Sequence[str] | None, verify_checksums: bool = True,
               jpeg_decoder: str = "reference", **_: Any) -> tuple[Any, dict]:
    from openvla.data.rlds import RLDSDataset

    ds = RLDSDataset(src, name=name, cameras=list(cameras) if cameras else None,
                     verify_checksums=verify_checksums, jpeg_decoder=jpeg_decoder)
    return ds, {"action_mask": ds.config.action_mask}


def _open_raw(src: Path, name: str | None, **_: Any) -> tuple[Any, dict]:
    from openvla.data.raw import RawEpisodes

    return RawEpisodes(src, name=name), {}


@dataclass(frozen=True)
class Reader:
    """A source format: how to recognise its folder, and how to open it as episodes plus writer defaults."""

    detect: Callable[[Path], bool]
    open: Callable[..., tuple[Any, dict[str, Any]]]
    description: str


READERS: dict[str, Reader] = {  # checked in this order by detect_source
    "lerobot": Reader(lambda p: (p / "meta" / "info.json").exists(), _open_lerobot, "a LeRobot dataset"),
    "rlds": Reader(lambda p: (p / "dataset_info.json").exists() or any(p.glob("*/dataset_info.json")),
                   _open_rlds, "a TFDS/RLDS directory"),
    "raw": Reader(lambda p: any(p.glob("*.npz")), _open_raw, "a folder of .npz episodes"),
}
SOURCES = ("auto", *READERS)


def detect_source(path: str | Path) -> str:
    """The first reader in ``READERS`` that recognises ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: does not exist")
    for name, reader in READERS.items():
        if reader.detect(path):
            return name
    known = "; ".join(f"{name}: {r.description}" for name, r in READERS.items())
    raise ValueError(f"{path}: no reader recognises this folder ({known})")


def open_source(src: str | Path, source: str = "auto", name: str | None = None,
                cameras: Sequence[str] | None = None, verify_checksums: bool = True,
                jpeg_decoder: str = "reference") -> tuple[Any, dict[str, Any]]:
    """An iterable of episodes (with a ``skipped`` list) and writer defaults (fps, action mask) for ``src``.

    RLDS only: ``verify_checksums=False`` skips the records' CRC check (faster; flipped bytes go unnoticed);
    ``jpeg_decoder`` picks the reference's (TensorFlow's) JPEG pixels or the accurate IDCT's."""
    source = detect_source(src) if source == "auto" else source
    if source not in READERS:
        raise ValueError(f"unknown source format {source!r}; choose one of {SOURCES}")
    return READERS[source].open(Path(src), name=name, cameras=cameras, verify_checksums=verify_checksums,
                                jpeg_decoder=jpeg_decoder)


class _Wrapped:
    """An episode generator with a name, a length and an (empty) ``skipped`` list."""

    def __init__(self, episodes: Iterable[Episode], name: str, length: int):
        self._episodes, self.name, self._length, self.skipped = episodes, name, length, []

    def __iter__(self):
        return iter(self._episodes)

    def __len__(self) -> int:
        return self._length


def convert(src: str | Path, dst: str | Path, source: str = "auto", name: str | None = None,
            fps: int | None = None, image_format: str = "png", cameras: Sequence[str] | None = None,
            max_episodes: int | None = None, overwrite: bool = False, robot_type: str | None = None,
            progress: bool = True, verify_checksums: bool = True, jpeg_decoder: str = "reference") -> ConvertResult:
    """Convert ``src`` into a new LeRobot v3.0 dataset at ``dst`` (stats and dataset_statistics included)."""
    from openvla.data.lerobot import LeRobotWriter

    episodes, defaults = open_source(src, source, name, cameras, verify_checksums, jpeg_decoder)
    dst = Path(dst)
    iterator: Iterable[Episode] = episodes
    if progress:
        from tqdm import tqdm

        try:
            total = len(episodes)
        except TypeError:
            total = None
        total = min(total, max_episodes) if total is not None and max_episodes else total or max_episodes
        iterator = tqdm(episodes, total=total, desc=f"convert {Path(src).name}", unit="episode")
    writer = LeRobotWriter(dst, fps or defaults.get("fps") or DEFAULT_FPS, image_format=image_format,
                           robot_type=robot_type or defaults.get("robot_type") or "unknown",
                           name=name or getattr(episodes, "name", None), action_mask=defaults.get("action_mask"),
                           overwrite=overwrite)
    with writer:
        for n, episode in enumerate(iterator):
            if max_episodes is not None and n >= max_episodes:
                break
            writer.add_episode(episode)
    skipped = list(getattr(episodes, "skipped", [])) + writer.skipped
    return ConvertResult(dst, writer.num_episodes, writer.num_frames, skipped)
