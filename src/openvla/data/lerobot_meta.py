"""The metadata files of the LeRobot dataset layout (v3.0 written; v2.0/v2.1 read): info, tasks, episodes.

Layout (codebase v3.0)::

    meta/info.json                      schema, fps, path templates, totals
    meta/stats.json                     per feature min/max/mean/std/count/q01/q10/q50/q90/q99
    meta/tasks.parquet                  task strings (the pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, file indices, stats/*
    data/chunk-XXX/file-XXX.parquet     many episodes per file, one row per frame
    videos/observation.images.CAM/chunk-XXX/file-XXX.mp4   (video datasets) many episodes per file

v2.x keeps one parquet (and one mp4 per camera) per episode and jsonl files for tasks and episodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
READABLE_VERSIONS = ("v2.0", "v2.1", "v3.0")
IMAGE_PREFIX = "observation.images."
ACTION = "action"
STATE = "observation.state"
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
LEROBOT_QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, with a clear error when the folder is not a LeRobot dataset of a known version."""
    path = root / "meta" / "info.json"
    if not path.exists():
        raise FileNotFoundError(f"{root}: not a LeRobot dataset (no meta/info.json)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    version = info.get("codebase_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: codebase_version {version!r} is not one of {READABLE_VERSIONS}")
    return info


def vector_feature(dim: int, dtype: str = "float32") -> dict[str, Any]:
    return {"dtype": dtype, "shape": [dim], "names": None}


def image_feature(height: int, width: int, video: dict[str, Any] | None = None) -> dict[str, Any]:
    feature: dict[str, Any] = {"dtype": "video" if video else "image", "shape": [height, width, 3],
                               "names": ["height", "width", "channel"]}
    if video:
        feature["info"] = video
    return feature


def index_features() -> dict[str, Any]:
    return {"timestamp": vector_feature(1, "float32"),
            **{k: vector_feature(1, "int64") for k in INDEX_COLUMNS[1:]}}


def hf_features(features: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` schema stored in each data parquet (how LeRobot's loader types columns)."""
    out: dict[str, Any] = {}
    for key, f in features.items():
        if f["dtype"] == "video":
            continue
        if f["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif f["shape"] == [1]:
            out[key] = {"dtype": f["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": f["dtype"], "_type": "Value"}, "length": f["shape"][0],
                        "_type": "List"}
    return out


def arrow_schema(features: dict[str, Any]) -> pa.Schema:
    """The arrow schema of the data parquet files for ``features`` (LeRobot's column types)."""
    fields = []
    for key, f in features.items():
        if f["dtype"] == "video":
            continue
        if f["dtype"] == "image":
            fields.append(pa.field(key, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        elif f["shape"] == [1]:
            fields.append(pa.field(key, pa.from_numpy_dtype(np.dtype(f["dtype"]))))
        else:
            fields.append(pa.field(key, pa.list_(pa.from_numpy_dtype(np.dtype(f["dtype"])), f["shape"][0])))
    meta = {"huggingface": json.dumps({"info": {"features": hf_features(features)}})}
    return pa.schema(fields, metadata=meta)


def write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes it: the task string is the index, ``task_index`` the column."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "str",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    pq.write_table(table, path)


def read_tasks(root: Path, info: dict[str, Any]) -> list[str]:
    """Task strings indexed by task_index (v3 tasks.parquet or v2 tasks.jsonl)."""
    if info["codebase_version"] == "v3.0":
        path = root / "meta" / "tasks.parquet"
        table = read_parquet(path)
        text_col = "task" if "task" in table.column_names else "__index_level_0__"
        if text_col not in table.column_names:
            raise ValueError(f"{path}: no task text column (expected 'task' or the pandas index)")
        pairs = zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist(), strict=True)
    else:
        pairs = ((r["task_index"], r["task"]) for r in read_jsonl(root / "meta" / "tasks.jsonl"))
    tasks = dict(pairs)
    return [tasks.get(i, "") for i in range(max(tasks) + 1)] if tasks else []


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON: {err}") from err
    return rows


def read_parquet(path: Path, columns: list[str] | None = None, what: str = "") -> pa.Table:
    """Read a parquet file, naming the file (and what it holds) when it is missing, corrupt or truncated."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing{what}")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated parquet file{what}: {err}") from err


def read_episodes(root: Path, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per episode: episode_index, length, tasks, and (v3) data/video file indices and times."""
    if info["codebase_version"] != "v3.0":
        return read_jsonl(root / "meta" / "episodes.jsonl")
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}/meta/episodes: no episode metadata files")
    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path}: corrupt or truncated parquet file (episode metadata): {err}") from err
        keep = [n for n in names if not n.startswith("stats/")]
        rows.extend(read_parquet(path, keep, " (episode metadata)").to_pylist())
    return sorted(rows, key=lambda r: r["episode_index"])


def check_totals(root: Path, info: dict[str, Any], episodes: list[dict[str, Any]]) -> None:
    """Raise ValueError when info.json's total_episodes / total_frames disagree with the episode metadata."""
    where = "meta/episodes.jsonl" if info["codebase_version"] != "v3.0" else "meta/episodes"
    frames = sum(int(e["length"]) for e in episodes)
    for key, found, what in (("total_episodes", len(episodes), "episodes"), ("total_frames", frames, "frames")):
        claimed = info.get(key)
        if claimed is not None and int(claimed) != found:
            raise ValueError(f"{root}/meta/info.json: {key} is {claimed} but {where} lists {found} {what}: the "
                             f"dataset is incomplete (download it again) or info.json is stale (fix {key})")


def lerobot_stats(values: np.ndarray, image: bool = False) -> dict[str, Any]:
    """LeRobot's per-feature statistics of [N, D] values (images: per channel, shaped [3, 1, 1])."""
    from openvla.data.stats import RunningStats

    stats = RunningStats()
    stats.update(values)
    return format_lerobot_stats(stats, image)


def format_lerobot_stats(stats: Any, image: bool = False) -> dict[str, Any]:
    """A ``RunningStats`` as LeRobot's stats entry: min, max, mean, std, count, q01, q10, q50, q90, q99."""
    r = stats.result(LEROBOT_QUANTILES)
    out: dict[str, Any] = {}
    for key in ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"):
        if key == "count":
            out[key] = [int(stats.count)]
            continue
        v = r[key]
        out[key] = [[[float(x)]] for x in v] if image else [float(x) for x in v]
    return out
