"""Integrity checks behind ``openvla data info``: every file a dataset refers to is there and whole.

They read what cheap structure there is and decode nothing: the packets of each mp4 (so every byte of the
video files is read once) and the record headers of each TFRecord shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openvla.data.lerobot import LeRobotDataset
    from openvla.data.rlds import RLDSDataset


def _frames_in(path: Path, fps: int) -> tuple[set[int], str]:
    """Frame numbers (time x fps) of the packets of an mp4's video stream, and the read error if any."""
    import av

    shown: set[int] = set()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    shown.add(int(round(float(packet.pts * stream.time_base) * fps)))
    except (av.error.FFmpegError, IndexError) as err:
        return shown, getattr(err, "strerror", None) or str(err)
    return shown, ""


def _span(indices: list[int]) -> str:
    return f"episode {indices[0]}" if len(indices) == 1 else f"episodes {indices[0]}..{indices[-1]}"


def video_problems(ds: LeRobotDataset) -> list[str]:
    """One line per video file that is missing, unreadable, or lacks frames of the episodes it should hold."""
    wanted: dict[Path, list[tuple[int, str, float, int]]] = {}
    for cam in ds.video_cameras:
        for pos in range(ds.num_episodes):
            path, start = ds.video_location(pos, cam)
            index, length = ds.location(int(ds.episode_starts[pos]))[0], int(ds.episode_lengths[pos])
            wanted.setdefault(path, []).append((index, cam, start, length))
    problems = []
    for path, episodes in wanted.items():
        cams = sorted({cam for _, cam, _, _ in episodes})
        what = f"camera {', '.join(cams)}, {_span([e[0] for e in episodes])}"
        if not path.exists():
            problems.append(f"{path}: missing ({what})")
            continue
        shown, error = _frames_in(path, ds.fps)
        short = []
        for index, _, start, length in episodes:
            first = int(round(start * ds.fps))
            have = sum(f in shown for f in range(first, first + length))
            if have < length:
                short.append((index, have, length))
        if short:
            detail = f"{short[0][1]} of {short[0][2]} frames" if len(short) == 1 else \
                f"{sum(h for _, h, _ in short)} of {sum(n for _, _, n in short)} frames"
            reason = f"cannot read it: {error}" if error and not shown else "truncated or corrupt"
            problems.append(f"{path}: {_span([s[0] for s in short])} of camera {', '.join(cams)}: {detail} "
                            f"({reason})")
    return problems


def shard_problems(ds: RLDSDataset) -> list[str]:
    """One line per TFRecord shard that is cut inside a record or holds another count than dataset_info.json."""
    from openvla.data.tfrecord import count_records

    problems = []
    for shard, path in enumerate(ds.files):
        try:
            count = count_records(path)
        except ValueError as err:
            problems.append(str(err))
            continue
        mismatch = ds.count_mismatch(shard, count)
        if mismatch:
            problems.append(mismatch)
    return problems
