"""Read RLDS datasets from local TFDS directories without TensorFlow, as standardised ``Episode``s.

A TFDS directory (``<data_dir>/<name>/<version>/``) holds ``dataset_info.json``, ``features.json`` and
``<name>-<split>.tfrecord-XXXXX-of-YYYYY`` shards with one ``tf.train.Example`` per episode; step features
are flattened under ``steps/...`` (one list entry per step), episode features under ``episode_metadata/``.
The reader parses those records itself (``tfrecord``), rebuilds the nested trajectory, applies the
dataset's OXE standardisation and restructures it into an ``Episode`` (``oxe.restructure``). Episodes
without any instruction are skipped and listed in ``skipped``, as the reference's ``skip_unlabeled``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openvla.data import oxe
from openvla.data.episodes import Episode
from openvla.data.image_decode import JPEG_DECODERS
from openvla.data.tfrecord import decode_example, read_records


@dataclass(frozen=True)
class FeatureSpec:
    """One leaf of features.json: where it is stored, what it holds, and its per-step shape."""

    key: str
    kind: str  # image | tensor | text
    dtype: str
    shape: tuple[int | None, ...]
    in_steps: bool
    encoding: str = "none"


def _dims(shape: dict[str, Any] | None) -> tuple[int | None, ...]:
    dims = (shape or {}).get("dimensions", [])
    return tuple(None if d in (None, "-1", -1) else int(d) for d in dims)


def parse_features(features: dict[str, Any]) -> list[FeatureSpec]:
    """Flatten a TFDS features.json (FeaturesDict / Dataset / Image / Tensor / Scalar / Text) into leaves."""
    leaves: list[FeatureSpec] = []

    def walk(node: dict[str, Any], key: str, in_steps: bool) -> None:
        if "featuresDict" in node:
            for name, child in node["featuresDict"]["features"].items():
                walk(child, f"{key}/{name}" if key else name, in_steps)
        elif "sequence" in node:
            walk(node["sequence"]["feature"], key, True)
        elif "image" in node:
            spec = node["image"]
            leaves.append(FeatureSpec(key, "image", spec.get("dtype", "uint8"), _dims(spec.get("shape")), in_steps,
                                      spec.get("encodingFormat", "png")))
        elif "tensor" in node:
            spec = node["tensor"]
            leaves.append(FeatureSpec(key, "tensor", spec.get("dtype", "float32"), _dims(spec.get("shape")),
                                      in_steps, spec.get("encoding", "none")))
        elif "text" in node:
            leaves.append(FeatureSpec(key, "text", "string", (), in_steps))
        else:
            raise ValueError(f"features.json: unsupported feature {key!r}: {sorted(node)}")

    walk(features, "", False)
    return leaves


def _steps_in(spec: FeatureSpec, raw: Any) -> int:
    if isinstance(raw, list):
        return len(raw)
    per_step = int(np.prod([d for d in spec.shape if d is not None] or [1]))
    return len(raw) // max(per_step, 1)


def _value(spec: FeatureSpec, raw: Any, steps: int) -> Any:
    """A decoded leaf: encoded image bytes per step, str array, or a typed array [T, *shape]."""
    lead = (steps,) if spec.in_steps else ()
    if spec.kind == "image":
        return list(raw) if spec.in_steps else raw[0]
    if spec.kind == "text" or spec.dtype == "string":
        texts = np.array([v.decode("utf-8", "replace") for v in raw], dtype=object)
        return texts if spec.in_steps else (texts[0] if len(texts) else "")
    if spec.encoding in ("bytes", "zlib"):
        import zlib

        blobs = [zlib.decompress(b) if spec.encoding == "zlib" else b for b in raw]
        arr = np.stack([np.frombuffer(b, spec.dtype) for b in blobs]) if blobs else np.zeros(0, spec.dtype)
        return arr.reshape(*lead, *[d if d is not None else -1 for d in spec.shape])
    arr = np.asarray(raw)
    dtype = np.bool_ if spec.dtype == "bool" else np.dtype(spec.dtype)
    shape = [d if d is not None else -1 for d in spec.shape]
    return arr.astype(dtype).reshape(*lead, *shape) if (lead or shape) else arr.astype(dtype)[0]


def _put(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def resolve_dataset_dir(path: str | Path) -> Path:
    """The version directory holding dataset_info.json: ``path`` itself, or its highest version below."""
    path = Path(path)
    if (path / "dataset_info.json").exists():
        return path
    versions = sorted((p for p in path.glob("*") if (p / "dataset_info.json").exists()),
                      key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"[.]", p.name)])
    if not versions:
        raise FileNotFoundError(f"{path}: not a TFDS dataset directory (no dataset_info.json here or in a "
                                f"version folder below)")
    return versions[-1]


class RLDSDataset:
    """The episodes of one RLDS dataset in a local TFDS directory, standardised the OXE way.

    ``name`` picks the OXE config and transform (default: the dataset folder's name, e.g. ``bridge_orig``);
    ``config`` overrides the config for datasets outside OXE; ``cameras`` picks roles (``primary``,
    ``secondary``, ``wrist``; default all the config names); ``decode_images=False`` skips images (stats);
    ``verify_checksums=False`` skips the records' data CRCs (flipped bytes are then read as wrong numbers);
    ``jpeg_decoder``: ``"reference"`` (TensorFlow's fast-IDCT pixels, as the OpenVLA reference reads them) or
    ``"accurate"`` (libjpeg's accurate IDCT), see ``image_decode``.
    """

    def __init__(self, path: str | Path, name: str | None = None, split: str = "train",
                 config: oxe.DatasetConfig | None = None, cameras: list[str] | None = None,
                 standardize: bool = True, decode_images: bool = True, verify_checksums: bool = True,
                 jpeg_decoder: str = "reference"):
        self.path = resolve_dataset_dir(path)
        self.name = name or (self.path.parent.name if re.match(r"^\d", self.path.name) else self.path.name)
        self.info = json.loads((self.path / "dataset_info.json").read_text())
        features_path = self.path / "features.json"
        if not features_path.exists():
            raise FileNotFoundError(f"{features_path}: missing (needed to decode the records)")
        self.features = parse_features(json.loads(features_path.read_text()))
        self.config = config or oxe.get_config(self.name)
        self.split, self.cameras = split, cameras
        self.standardize, self.decode_images, self.verify = standardize, decode_images, verify_checksums
        if jpeg_decoder not in JPEG_DECODERS:
            raise ValueError(f"jpeg_decoder must be one of {JPEG_DECODERS}, got {jpeg_decoder!r}")
        self.jpeg_decoder = jpeg_decoder
        self.files = sorted(self.path.glob(f"*-{split}.tfrecord*"))
        if not self.files:
            raise FileNotFoundError(f"{self.path}: no '*-{split}.tfrecord*' files")
        self.shard_lengths = self._shard_lengths()
        self.skipped: list[str] = []

    def _shard_lengths(self) -> list[int] | None:
        """Records per file from dataset_info.json's shardLengths (None when it gives none); a missing or
        unexpected shard file raises FileNotFoundError naming it."""
        split = next((s for s in self.info.get("splits", []) if s.get("name") == self.split), {})
        if "shardLengths" not in split:
            return None
        lengths = [int(n) for n in split["shardLengths"]]
        found = {}
        for f in self.files:
            m = re.search(r"-(\d+)-of-(\d+)$", f.name)
            found[(int(m.group(1)), int(m.group(2))) if m else f.name] = f
        want = [(i, len(lengths)) for i in range(len(lengths))]
        missing = [f"{i:05d}-of-{n:05d}" for i, n in want if (i, n) not in found]
        extra = [found[k].name for k in found if k not in want]
        problems = ([f"missing shard {', '.join(missing[:3])}"] if missing else []) + (
            [f"unexpected file {', '.join(extra[:3])}"] if extra else [])
        if problems:
            raise FileNotFoundError(f"{self.path}: dataset_info.json lists {len(lengths)} {self.split!r} shards; "
                                    f"{'; '.join(problems)} (download the dataset again)")
        self.files = [found[k] for k in want]
        return lengths

    def __len__(self) -> int:
        for split in self.info.get("splits", []):
            if split.get("name") == self.split and "shardLengths" in split:
                return sum(int(n) for n in split["shardLengths"])
        raise TypeError(f"{self.path}/dataset_info.json gives no episode count for split {self.split!r}")

    def trajectories(self) -> Iterator[tuple[str, Any]]:
        """(where, nested trajectory dict) for every episode, before standardisation."""
        for shard, path in enumerate(self.files):
            count = 0
            for n, record in enumerate(read_records(path, self.verify)):
                where = f"{path}: episode {n}"
                try:
                    example = decode_example(record)
                except (ValueError, IndexError, UnicodeDecodeError) as err:
                    raise ValueError(f"{where}: corrupt tf.train.Example: {err}") from err
                yield where, self._trajectory(example, where)
                count = n + 1
            mismatch = self.count_mismatch(shard, count)
            if mismatch:
                raise ValueError(mismatch)

    def count_mismatch(self, shard: int, count: int) -> str | None:
        """The error line when shard ``shard`` holds ``count`` records but dataset_info.json says otherwise."""
        if self.shard_lengths is None or count == self.shard_lengths[shard]:
            return None
        return (f"{self.files[shard]}: holds {count} episodes, dataset_info.json says {self.shard_lengths[shard]} "
                f"(shardLengths[{shard}]): the shard is cut short or was replaced; download it again")

    def _trajectory(self, example: dict[str, Any], where: str) -> dict[str, Any]:
        traj: dict[str, Any] = {"traj_metadata": {}}
        steps = None
        for spec in self.features:
            if spec.key not in example:
                raise ValueError(f"{where}: feature {spec.key!r} from features.json is missing")
            raw = example[spec.key]
            if spec.in_steps and steps is None:
                steps = _steps_in(spec, raw)
            try:
                value = _value(spec, raw, steps or 0)
            except ValueError as err:
                raise ValueError(f"{where}: feature {spec.key!r} does not match its shape {spec.shape}: {err}") from err
            parts = spec.key.split("/")
            if parts[0] == "steps":
                _put(traj, parts[1:], value)
            else:
                _put(traj["traj_metadata"], parts[1:] if parts[0] == "episode_metadata" else parts, value)
        return traj

    def __iter__(self) -> Iterator[Episode]:
        index = 0
        for where, traj in self.trajectories():
            if self.standardize:
                try:
                    traj = oxe.standardize(self.name, traj)
                except (KeyError, IndexError, ValueError) as err:
                    raise ValueError(f"{where}: cannot standardise as {self.name!r}: {err!r}") from err
            cameras = self.cameras if self.decode_images else []
            ep = oxe.restructure(traj, self.config, self.name, index, cameras, where, self.jpeg_decoder)
            index += 1
            if not ep.instruction:
                self.skipped.append(f"{where}: no language instruction")
                warnings.warn(f"{where}: skipped, no language instruction", stacklevel=2)
                continue
            if len(ep) == 0:
                self.skipped.append(f"{where}: no steps left after standardisation")
                continue
            yield ep
