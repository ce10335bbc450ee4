"""Read and write datasets in the LeRobot layout (v3.0 written; v2.0, v2.1 and v3.0 read), no ``lerobot`` needed.

Camera names drop the ``observation.images.`` prefix (``observation.images.wrist`` is camera ``wrist``).
Images live either inside the data parquet as PNG (``image_format="png"``, or JPEG) or in one mp4 per camera
and file (``"video"``). Our writer stores encoded images uncompressed in row groups of 4 frames, so reading
one frame reads 4 images; datasets with larger row groups (LeRobot's: one per episode or more) read a whole
row group per miss of the per-process cache (``cache_mb``); re-writing them with ``openvla data convert``
speeds up random access.
The reader keeps actions, states and indices of every frame in memory (small) and decodes images only when
asked, so a loader can fetch single frames quickly.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from openvla.data import lerobot_meta as meta
from openvla.data.episodes import Episode
from openvla.data.stats import RunningStats, save_statistics, statistics_entry
from openvla.data.video import VideoEncoder, VideoFrameReader, codec_family, decode_range, pick_codec

IMAGE_STATS_RESERVOIR = 100_000


def _file_position(n: int, chunks_size: int) -> tuple[int, int]:
    return n // chunks_size, n % chunks_size


def _encode_image(frame: np.ndarray, fmt: str, level: int) -> tuple[bytes, str]:
    """PNG (lossless; zlib ``level``) or JPEG (quality 95) bytes of one frame, and the file suffix."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        return buf.getvalue(), "jpg"
    Image.fromarray(frame).save(buf, format="PNG", compress_level=level)
    return buf.getvalue(), "png"


def _image_sample(frames: np.ndarray) -> np.ndarray:
    """Pixels [n, 3] in [0, 1] from about ten frames of an episode, every 4th row and column (for stats)."""
    step = max(1, len(frames) // 10)
    return (frames[::step, ::4, ::4].reshape(-1, 3) / 255.0).astype(np.float32)


class LeRobotWriter:
    """Write ``Episode``s as a LeRobot v3.0 dataset; ``close()`` (or leaving ``with``) writes the metadata.

    ``image_format``: ``"png"`` (lossless, in the parquet), ``"jpeg"`` (quality 95, in the parquet; lossy but
    decodes about twice as fast) or ``"video"`` (one mp4 per camera and file, AV1 by default as LeRobot).
    Episodes are numbered in the order they are added. Every episode must have the same cameras (and
    image sizes), action size, state size (or no state) and extra keys as the first. An episode without an
    instruction is skipped and recorded in ``skipped``. ``close()`` also writes ``meta/stats.json`` and
    ``meta/dataset_statistics.json`` (the reference layout, key ``name``, default the folder name).
    """

    def __init__(self, root: str | Path, fps: int, image_format: str = "png", robot_type: str = "unknown",
                 name: str | None = None, codec: str = "libsvtav1", action_mask: Sequence[bool] | None = None,
                 data_file_mb: int = 100, video_file_mb: int = 200, chunks_size: int = 1000,
                 row_group_frames: int = 4, png_level: int = 6, overwrite: bool = False):
        if image_format not in ("png", "jpeg", "video"):
            raise ValueError(f"image_format must be 'png', 'jpeg' or 'video', got {image_format!r}")
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{self.root}: exists and is not empty (pass overwrite=True)")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fps, self.image_format, self.robot_type = int(fps), image_format, robot_type
        self.name = name or self.root.name
        self.codec = pick_codec(codec) if image_format == "video" else None
        self.action_mask = action_mask
        self.data_file_bytes, self.video_file_bytes = data_file_mb * 2**20, video_file_mb * 2**20
        self.chunks_size, self.row_group_frames, self.png_level = chunks_size, row_group_frames, png_level
        self.skipped: list[str] = []
        self._features: dict[str, Any] | None = None
        self._extra: list[str] = []
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._frames = 0
        self._data: tuple[pq.ParquetWriter, Path] | None = None
        self._data_files = 0
        self._videos: dict[str, VideoEncoder] = {}
        self._video_files: dict[str, int] = {}
        self._stats: dict[str, RunningStats] = {}
        self._done = False

    # -- schema -------------------------------------------------------------------------------------
    def _schema_from(self, ep: Episode) -> dict[str, Any]:
        features: dict[str, Any] = {}
        for cam, frames in ep.images.items():
            video = None
            if self.image_format == "video":
                video = {"video.height": frames.shape[1], "video.width": frames.shape[2],
                         "video.codec": codec_family(self.codec), "video.pix_fmt": "yuv420p",
                         "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3,
                         "has_audio": False}
            features[meta.IMAGE_PREFIX + cam] = meta.image_feature(frames.shape[1], frames.shape[2], video)
        if ep.states is not None:
            features[meta.STATE] = meta.vector_feature(ep.states.shape[1])
        features[meta.ACTION] = meta.vector_feature(ep.actions.shape[1])
        for key, values in ep.extra.items():
            values = np.asarray(values)
            dtype = "bool" if values.dtype == bool else str(values.dtype)
            features[key] = meta.vector_feature(int(np.prod(values.shape[1:], dtype=int)), dtype)
        features.update(meta.index_features())
        return features

    def _check(self, ep: Episode) -> None:
        """Raise ValueError naming the episode when it does not match the dataset's schema."""
        where = f"{self.root}: episode {ep.episode_index} of {ep.dataset_name!r}"
        if set(ep.images) != {k[len(meta.IMAGE_PREFIX):] for k in self._features if k.startswith(meta.IMAGE_PREFIX)}:
            raise ValueError(f"{where}: cameras {sorted(ep.images)} differ from the dataset's "
                             f"{self.cameras}")
        for cam, frames in ep.images.items():
            shape = self._features[meta.IMAGE_PREFIX + cam]["shape"]
            if list(frames.shape[1:]) != shape:
                raise ValueError(f"{where}: camera {cam!r} frames are {frames.shape[1:]}, the dataset's are "
                                 f"{tuple(shape)}")
        if ep.actions.shape[1] != self._features[meta.ACTION]["shape"][0]:
            raise ValueError(f"{where}: action size {ep.actions.shape[1]} differs from earlier episodes "
                             f"({self._features[meta.ACTION]['shape'][0]})")
        has_state = meta.STATE in self._features
        if (ep.states is not None) != has_state or (
                has_state and ep.states.shape[1] != self._features[meta.STATE]["shape"][0]):
            got = None if ep.states is None else ep.states.shape[1]
            want = self._features[meta.STATE]["shape"][0] if has_state else None
            raise ValueError(f"{where}: state size {got} differs from earlier episodes ({want})")
        if sorted(ep.extra) != self._extra:
            raise ValueError(f"{where}: extra keys {sorted(ep.extra)} differ from earlier episodes {self._extra}")

    @property
    def cameras(self) -> list[str]:
        return [k[len(meta.IMAGE_PREFIX):] for k in self._features or {} if k.startswith(meta.IMAGE_PREFIX)]

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return self._frames

    # -- writing ------------------------------------------------------------------------------------
    def add_episode(self, ep: Episode) -> None:
        """Append one episode (validated; skipped and recorded when it has no instruction or no steps)."""
        if self._done:
            raise RuntimeError(f"{self.root}: writer is closed")
        ep.validate()
        reason = "no instruction" if not ep.instruction or not ep.instruction.strip() else (
            "no steps" if len(ep) == 0 else None)
        if reason:
            self.skipped.append(f"episode {ep.episode_index} of {ep.dataset_name!r}: {reason}")
            warnings.warn(f"{self.root}: skipped episode {ep.episode_index} of {ep.dataset_name!r}: {reason}",
                          stacklevel=2)
            return
        if self._features is None:
            self._features = self._schema_from(ep)
            self._extra = sorted(ep.extra)
        self._check(ep)
        index, length, start = len(self._episodes), len(ep), self._frames
        steps = ep.step_instructions()
        task_index = np.array([self._tasks.setdefault(t, len(self._tasks)) for t in steps], np.int64)
        columns = self._columns(ep, index, task_index, start)
        row: dict[str, Any] = {"episode_index": index, "tasks": list(dict.fromkeys(steps)), "length": length}
        row.update(self._write_data(columns))
        row.update({"dataset_from_index": start, "dataset_to_index": start + length})
        if self.image_format == "video":
            for cam, frames in ep.images.items():
                row.update(self._write_video(cam, frames))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        row.update(self._episode_stats(ep, columns))
        self._episodes.append(row)
        self._frames += length

    def _columns(self, ep: Episode, index: int, task_index: np.ndarray, start: int) -> dict[str, np.ndarray]:
        """The numeric columns of one episode's rows (images are added by ``_write_data``)."""
        n = len(ep)
        cols: dict[str, np.ndarray] = {}
        if ep.states is not None:
            cols[meta.STATE] = ep.states.astype(np.float32)
        cols[meta.ACTION] = ep.actions.astype(np.float32)
        for key in self._extra:
            dtype = self._features[key]["dtype"]
            cols[key] = np.asarray(ep.extra[key]).reshape(n, -1).astype(dtype)
        cols["timestamp"] = (np.arange(n) / self.fps).astype(np.float32)
        cols["frame_index"] = np.arange(n, dtype=np.int64)
        cols["episode_index"] = np.full(n, index, np.int64)
        cols["index"] = start + np.arange(n, dtype=np.int64)
        cols["task_index"] = task_index
        if self.image_format != "video":
            for cam in ep.images:
                cols[meta.IMAGE_PREFIX + cam] = ep.images[cam]
        return cols

    def _arrow_table(self, cols: dict[str, np.ndarray]) -> pa.Table:
        schema = meta.arrow_schema(self._features)
        arrays = []
        for field in schema:
            values = cols[field.name]
            if pa.types.is_struct(field.type):
                encoded = [_encode_image(f, self.image_format, self.png_level) for f in values]
                data = [e[0] for e in encoded]
                names = [f"frame-{i:06d}.{e[1]}" for i, e in enumerate(encoded)]
                arrays.append(pa.StructArray.from_arrays(
                    [pa.array(data, pa.binary()), pa.array(names, pa.string())], names=["bytes", "path"]))
            elif pa.types.is_fixed_size_list(field.type):
                flat = pa.array(np.ascontiguousarray(values).reshape(-1), field.type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
            else:
                arrays.append(pa.array(values.reshape(-1), field.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write_data(self, cols: dict[str, np.ndarray]) -> dict[str, int]:
        if self._data is not None and self._data[1].stat().st_size >= self.data_file_bytes:
            self._data[0].close()
            self._data, self._data_files = None, self._data_files + 1
        chunk, file = _file_position(self._data_files, self.chunks_size)
        if self._data is None:
            path = self.root / meta.DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = meta.arrow_schema(self._features)
            images = [f.name for f in schema if f.name.startswith(meta.IMAGE_PREFIX)]
            # encoded images do not compress further: store them plainly so single frames read fast
            compression = {f.name: "NONE" if f.name in images else "SNAPPY" for f in schema}
            dictionary = [f.name for f in schema if f.name not in images]
            self._data = (pq.ParquetWriter(path, schema, compression=compression, use_dictionary=dictionary), path)
        size = self.row_group_frames if self.image_format != "video" else None
        self._data[0].write_table(self._arrow_table(cols), row_group_size=size)
        return {"data/chunk_index": chunk, "data/file_index": file}

    def _write_video(self, cam: str, frames: np.ndarray) -> dict[str, Any]:
        key = meta.IMAGE_PREFIX + cam
        encoder = self._videos.get(cam)
        if encoder is not None and encoder.path.exists() and encoder.path.stat().st_size >= self.video_file_bytes:
            encoder.close()
            encoder, self._video_files[cam] = None, self._video_files[cam] + 1
        chunk, file = _file_position(self._video_files.setdefault(cam, 0), self.chunks_size)
        if encoder is None:
            path = self.root / meta.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            encoder = self._videos[cam] = VideoEncoder(path, self.fps, frames.shape[2], frames.shape[1],
                                                       self.codec)
        start = encoder.frames_written / self.fps
        encoder.add(frames)
        return {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": start,
                f"videos/{key}/to_timestamp": encoder.frames_written / self.fps}

    def _episode_stats(self, ep: Episode, cols: dict[str, np.ndarray]) -> dict[str, Any]:
        """Per-episode LeRobot stats columns, and the running dataset-wide ones."""
        out: dict[str, Any] = {}
        values: dict[str, tuple[np.ndarray, bool]] = {
            meta.IMAGE_PREFIX + cam: (_image_sample(frames), True) for cam, frames in ep.images.items()}
        values.update({k: (v, False) for k, v in cols.items() if not k.startswith(meta.IMAGE_PREFIX)})
        for key, (v, image) in values.items():
            v = v.reshape(len(v), -1).astype(np.float64)
            for stat, x in meta.lerobot_stats(v, image).items():
                out[f"stats/{key}/{stat}"] = x
            reservoir = IMAGE_STATS_RESERVOIR if image else 1_000_000
            self._stats.setdefault(key, RunningStats(reservoir)).update(v)
        return out

    def close(self) -> Path:
        """Finish the files and write meta/info.json, tasks, episodes, stats.json, dataset_statistics.json."""
        if self._done:
            return self.root
        self._finish_files()
        if not self._episodes:
            raise ValueError(f"{self.root}: no episodes were written ({len(self.skipped)} skipped)")
        m = self.root / "meta"
        (m / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), self.root / meta.EPISODES_PATH)
        meta.write_tasks(m / "tasks.parquet", list(self._tasks))
        info = {
            "codebase_version": meta.CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self._episodes), "total_frames": self._frames, "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size, "data_files_size_in_mb": self.data_file_bytes // 2**20,
            "video_files_size_in_mb": self.video_file_bytes // 2**20, "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"}, "data_path": meta.DATA_PATH,
            "video_path": meta.VIDEO_PATH if self.image_format == "video" else None,
            "features": self._features,
        }
        (m / "info.json").write_text(json.dumps(info, indent=4))
        lerobot_stats = {key: meta.format_lerobot_stats(s, key.startswith(meta.IMAGE_PREFIX))
                         for key, s in self._stats.items()}
        (m / "stats.json").write_text(json.dumps(lerobot_stats, indent=4))
        states = self._stats.get(meta.STATE, RunningStats())
        entry = statistics_entry(self._stats[meta.ACTION], states, self.action_mask, len(self._episodes),
                                 self.name)
        save_statistics({self.name: entry}, self.root)
        return self.root

    def _finish_files(self) -> None:
        self._done = True
        if self._data is not None:
            self._data[0].close()
        for encoder in self._videos.values():
            encoder.close()

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # leave no meta/info.json, so a half-written dataset cannot be mistaken for a whole one
            self._finish_files()


def write_dataset(root: str | Path, episodes: Iterable[Episode], fps: int, progress: bool = False,
                  **kw: Any) -> Path:
    """Write episodes to a new LeRobot v3.0 dataset at ``root`` and return its path."""
    if progress:
        from tqdm import tqdm

        episodes = tqdm(episodes, desc=f"writing {Path(root).name}", unit="episode")
    with LeRobotWriter(root, fps, **kw) as writer:
        for ep in episodes:
            writer.add_episode(ep)
    return Path(root)


class _ProcessLocal:
    """Open files and decoded-data caches of one process (rebuilt after a fork or unpickling)."""

    def __init__(self, cache_bytes: int):
        self.pid = os.getpid()
        self.parquet: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}
        self.groups: OrderedDict[tuple[int, int, str], list[bytes | None]] = OrderedDict()
        self.group_bytes = 0
        self.cache_bytes = cache_bytes
        self.video = VideoFrameReader()


class LeRobotDataset:
    """A LeRobot dataset on disk (v2.0, v2.1 or v3.0): metadata, episodes, and single frames on demand.

    ``actions`` [N, D] and ``states`` [N, S] (or None) hold every frame in episode order; ``episode(i)`` is
    the i-th episode (0-based position; ``Episode.episode_index`` keeps the stored index).
    """

    def __init__(self, root: str | Path, name: str | None = None, cache_mb: int = 256):
        self.root = Path(root)
        self.info = meta.read_info(self.root)
        self.version = self.info["codebase_version"]
        self.name = name or self.root.resolve().name
        self.fps = int(self.info["fps"])
        features = self.info["features"]
        if meta.ACTION not in features:
            raise ValueError(f"{self.root}/meta/info.json: no 'action' feature")
        self._camera_keys = {k[len(meta.IMAGE_PREFIX):]: k for k, f in features.items()
                             if k.startswith(meta.IMAGE_PREFIX) and f["dtype"] in ("image", "video")}
        self._is_video = {cam: features[k]["dtype"] == "video" for cam, k in self._camera_keys.items()}
        self.action_dim = int(features[meta.ACTION]["shape"][0])
        self.state_dim = int(features[meta.STATE]["shape"][0]) if meta.STATE in features else None
        self.tasks = meta.read_tasks(self.root, self.info)
        self._extra_keys = [k for k, f in features.items() if k not in self._camera_keys.values()
                            and k not in (meta.ACTION, meta.STATE, *meta.INDEX_COLUMNS)
                            and f["dtype"] not in ("image", "video", "string")]
        self._episodes = meta.read_episodes(self.root, self.info)
        meta.check_totals(self.root, self.info, self._episodes)
        self._load_frames()
        self._cache_bytes = cache_mb * 2**20
        self._local: _ProcessLocal | None = None

    # -- metadata -----------------------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        return list(self._camera_keys)

    @property
    def video_cameras(self) -> list[str]:
        """The cameras stored as mp4 video (the others as images in the parquet)."""
        return [cam for cam in self._camera_keys if self._is_video[cam]]

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return int(self.actions.shape[0])

    def camera_shape(self, cam: str) -> tuple[int, int, int]:
        return tuple(self.info["features"][self._camera_keys[cam]]["shape"])

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (f"LeRobotDataset({str(self.root)!r}, {self.version}, episodes={self.num_episodes}, "
                f"frames={self.num_frames}, cameras={self.cameras})")

    # -- loading ------------------------------------------------------------------------------------
    def _data_path(self, ep: dict[str, Any]) -> Path:
        if self.version == "v3.0":
            rel = self.info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                file_index=ep["data/file_index"])
        else:
            chunk = ep["episode_index"] // self.info.get("chunks_size", 1000)
            rel = self.info["data_path"].format(episode_chunk=chunk, episode_index=ep["episode_index"])
        return self.root / rel

    def video_location(self, pos: int, cam: str) -> tuple[Path, float]:
        """(mp4 file, start time in seconds) of the ``pos``-th episode's ``cam`` video."""
        ep, key = self._episodes[pos], self._camera_keys[cam]
        if self.version == "v3.0":
            rel = self.info["video_path"].format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"],
                                                 file_index=ep[f"videos/{key}/file_index"])
            return self.root / rel, float(ep[f"videos/{key}/from_timestamp"])
        chunk = ep["episode_index"] // self.info.get("chunks_size", 1000)
        rel = self.info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=ep["episode_index"])
        return self.root / rel, 0.0

    def _load_frames(self) -> None:
        """Read the numeric columns of every data file and lay the frames out in episode order."""
        by_file: dict[Path, list[int]] = {}
        for pos, ep in enumerate(self._episodes):
            by_file.setdefault(self._data_path(ep), []).append(pos)
        self._files = list(by_file)
        columns = [meta.ACTION, "frame_index", "task_index"] + ([meta.STATE] if self.state_dim else [])
        columns += self._extra_keys
        n = len(self._episodes)
        parts: dict[str, list[np.ndarray | None]] = {c: [None] * n for c in columns}
        file_of: list[np.ndarray] = [np.zeros(0, np.int32)] * n
        rows_of: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        for file_id, (path, positions) in enumerate(by_file.items()):
            indices = [self._episodes[p]["episode_index"] for p in positions]
            what = f" (episodes {indices[0]}..{indices[-1]})" if len(indices) > 1 else f" (episode {indices[0]})"
            table = meta.read_parquet(path, self._present(path, columns, what), what)
            ep_col = table.column("episode_index").to_numpy()
            order = np.lexsort((table.column("frame_index").to_numpy(), ep_col))
            sorted_eps = ep_col[order]
            arrays = {c: self._column(table, c, path, ep_col) for c in columns if c in table.column_names}
            for pos, index in zip(positions, indices, strict=True):
                rows = order[np.searchsorted(sorted_eps, index, "left"):np.searchsorted(sorted_eps, index, "right")]
                length = int(self._episodes[pos]["length"])
                if len(rows) != length:
                    raise ValueError(f"{path}: episode {index} has {len(rows)} frames, its metadata says {length}")
                for c, values in arrays.items():
                    parts[c][pos] = values[rows]
                file_of[pos], rows_of[pos] = np.full(length, file_id, np.int32), rows
        for c in (meta.ACTION, meta.STATE, "frame_index"):
            missing = [p for p in range(n) if c in parts and parts[c][p] is None]
            if missing:
                path = self._data_path(self._episodes[missing[0]])
                raise ValueError(f"{path}: no {c!r} column (episode {self._episodes[missing[0]]['episode_index']})")

        def cat(c: str, dtype: Any, width: int | None = None) -> np.ndarray:
            got = [x for x in parts[c] if x is not None]
            empty = np.zeros((0, width) if width else 0, dtype)
            return np.concatenate(got).astype(dtype) if got else empty

        self.actions = cat(meta.ACTION, np.float32, self.action_dim)
        self.states = cat(meta.STATE, np.float32, self.state_dim) if self.state_dim else None
        self.frame_indices = cat("frame_index", np.int64)
        has_task = all(x is not None for x in parts["task_index"])
        self.task_indices = cat("task_index", np.int64) if has_task else np.zeros(len(self.actions), np.int64)
        self.extra = {k: cat(k, parts[k][0].dtype) for k in self._extra_keys
                      if n and all(x is not None for x in parts[k])}
        self._row_file = np.concatenate(file_of) if n else np.zeros(0, np.int32)
        self._row_local = np.concatenate(rows_of) if n else np.zeros(0, np.int64)
        self.episode_lengths = np.array([int(e["length"]) for e in self._episodes], np.int64)
        self.episode_starts = (np.cumsum(self.episode_lengths) - self.episode_lengths).astype(np.int64)
        self.episode_of_frame = np.repeat(np.arange(n), self.episode_lengths)

    def _present(self, path: Path, columns: list[str], what: str) -> list[str]:
        try:
            names = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path}: corrupt or truncated parquet file{what}: {err}") from err
        missing = [c for c in (meta.ACTION, "episode_index", "frame_index") if c not in names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}{what}")
        return [c for c in columns if c in names] + ["episode_index"]

    def _column(self, table: pa.Table, name: str, path: Path, ep_col: np.ndarray) -> np.ndarray:
        """A column as numpy; list columns become [N, D] with a clear error when a row has another size."""
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            sizes = np.diff(col.offsets.to_numpy())
            want = self.action_dim if name == meta.ACTION else int(np.median(sizes)) if len(sizes) else 0
            bad = np.flatnonzero(sizes != want)
            if len(bad):
                row = bad[0]
                raise ValueError(f"{path}: episode {ep_col[row]} frame {row}: {name!r} has {sizes[row]} "
                                 f"values, expected {want}")
            return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), want)
        return col.to_numpy(zero_copy_only=False)

    # -- frame access -------------------------------------------------------------------------------
    def _process_local(self) -> _ProcessLocal:
        if self._local is None or self._local.pid != os.getpid():
            self._local = _ProcessLocal(self._cache_bytes)
        return self._local

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_local"] = None
        return state

    def _check_camera(self, cam: str) -> str:
        if cam not in self._camera_keys:
            raise KeyError(f"{self.root}: no camera {cam!r}; cameras: {self.cameras}")
        return self._camera_keys[cam]

    def location(self, frame: int) -> tuple[int, int]:
        """(stored episode_index, frame_index) of a frame."""
        return int(self._episodes[self.episode_of_frame[frame]]["episode_index"]), int(self.frame_indices[frame])

    def episode_bounds(self, frame: int) -> tuple[int, int]:
        """[start, end) frame positions of the episode holding ``frame``."""
        pos = self.episode_of_frame[frame]
        start = int(self.episode_starts[pos])
        return start, start + int(self.episode_lengths[pos])

    def instruction(self, frame: int) -> str:
        """The task of one frame (LeRobot stores a task per frame; it may change within an episode)."""
        task = int(self.task_indices[frame])
        return self.tasks[task] if 0 <= task < len(self.tasks) else ""

    def image(self, cam: str, frame: int) -> np.ndarray:
        """One camera image of one frame, uint8 HxWx3, decoding only what is needed."""
        key = self._check_camera(cam)
        episode, index = self.location(frame)
        where = f" (camera {cam!r}, episode {episode}, frame {index})"
        local = self._process_local()
        if self._is_video[cam]:
            path, start = self.video_location(int(self.episode_of_frame[frame]), cam)
            return local.video.frame(path, start + index / self.fps, self.fps, where)
        data = self._image_bytes(local, key, frame, where)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)  # PNG/JPEG, any mode -> RGB
        if img is None:
            path = self._files[self._row_file[frame]]
            raise ValueError(f"{path}: cannot decode image{where}: corrupt or truncated {len(data)} bytes")
        return img

    def _image_bytes(self, local: _ProcessLocal, key: str, frame: int, where: str) -> bytes:
        file_id, row = int(self._row_file[frame]), int(self._row_local[frame])
        path = self._files[file_id]
        try:
            if file_id not in local.parquet:
                pf = pq.ParquetFile(path, memory_map=True)
                sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
                local.parquet[file_id] = (pf, np.concatenate([[0], np.cumsum(sizes)]))
            pf, offsets = local.parquet[file_id]
            group = int(np.searchsorted(offsets, row, "right") - 1)
            cache_key = (file_id, group, key)
            images = local.groups.get(cache_key)
            if images is None:
                table = pf.read_row_group(group, columns=[key], use_threads=False)
                images = local.groups[cache_key] = table.column(0).combine_chunks().field("bytes").to_pylist()
                local.group_bytes += sum(len(b) for b in images if b)
                while local.group_bytes > local.cache_bytes and len(local.groups) > 1:
                    local.group_bytes -= sum(len(b) for b in local.groups.popitem(last=False)[1] if b)
            else:
                local.groups.move_to_end(cache_key)
            data = images[row - int(offsets[group])]
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path}: corrupt or truncated parquet file{where}: {err}") from err
        if data is None:
            raise ValueError(f"{path}: image bytes missing{where}")
        return data

    # -- episodes -----------------------------------------------------------------------------------
    def episode(self, i: int, cameras: Sequence[str] | None = None) -> Episode:
        """The i-th episode with all (or the given) cameras decoded."""
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"{self.root}: episode position {i} out of range 0..{self.num_episodes - 1}")
        start, end = int(self.episode_starts[i]), int(self.episode_starts[i] + self.episode_lengths[i])
        index = int(self._episodes[i]["episode_index"])
        images = {}
        for cam in cameras if cameras is not None else self.cameras:
            self._check_camera(cam)
            if self._is_video[cam]:
                path, t0 = self.video_location(i, cam)
                images[cam] = decode_range(path, t0, end - start, self.fps,
                                           f" (camera {cam!r}, episode {index})")
            else:
                images[cam] = np.stack([self.image(cam, f) for f in range(start, end)])
        tasks = self._episodes[i].get("tasks") or []
        steps = [self.instruction(f) for f in range(start, end)]
        instruction = steps[0] if steps else (tasks[0] if tasks else "")
        return Episode(images=images, actions=self.actions[start:end].copy(), instruction=instruction,
                       states=None if self.states is None else self.states[start:end].copy(),
                       episode_index=index, dataset_name=self.name,
                       extra={k: v[start:end].copy() for k, v in self.extra.items()},
                       instructions=steps if len(set(steps)) > 1 else None)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(self.num_episodes):
            yield self.episode(i)
