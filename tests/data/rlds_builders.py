"""Small RLDS datasets in the TFDS directory layout, written without TensorFlow (bridge_orig, fractal schemas)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from openvla.data.tfrecord import encode_example, write_records

_DICT = "tensorflow_datasets.core.features.features_dict.FeaturesDict"


def tensor(shape, dtype="float32"):
    return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]} if shape else {}, "dtype": dtype,
                       "encoding": "none"}}


def scalar(dtype):
    return {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
            "tensor": {"shape": {}, "dtype": dtype, "encoding": "none"}}


def image(h, w, fmt="png"):
    return {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
            "image": {"shape": {"dimensions": [str(h), str(w), "3"]}, "dtype": "uint8", "encodingFormat": fmt}}


def text():
    return {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}


def features_dict(features):
    return {"pythonClassName": _DICT, "featuresDict": {"features": features}}


def rlds_features(steps, episode_metadata):
    return features_dict({
        "steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
                  "sequence": {"feature": features_dict(steps), "length": "-1"}},
        "episode_metadata": features_dict(episode_metadata),
    })


def _flags(n):
    return {"is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1, "is_terminal": np.arange(n) == n - 1,
            "reward": (np.arange(n) == n - 1).astype(np.float32), "discount": np.ones(n, np.float32)}


def png(frame):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def frames(n, h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def bridge_episode(n, seed, instruction="put the spoon in the pot"):
    """One bridge_orig episode: 7-D EEF state, 7-D actions with a continuous gripper, two cameras."""
    rng = np.random.default_rng(seed)
    state = np.cumsum(rng.normal(0, 0.01, (n, 7)), axis=0).astype(np.float32)
    action = rng.normal(0, 0.02, (n, 7)).astype(np.float32)
    action[0] = 0.0  # bridge's first action is all zeros
    action[:, 6] = np.clip(np.linspace(1.2, -0.2, n) + rng.normal(0, 0.02, n), 0, 1)  # open -> closing
    steps = {"observation": {"image_0": frames(n, 16, 20, seed), "image_1": frames(n, 16, 20, seed + 1),
                             "state": state},
             "action": action, "language_instruction": [instruction] * n, **_flags(n)}
    return steps, {"file_path": f"/raw/bridge/{seed}.pkl"}


def fractal_episode(n, seed, instruction="pick coke can"):
    """One fractal (RT-1) episode: dict actions with a relative gripper command in [-1, 1]."""
    rng = np.random.default_rng(seed)
    gripper = np.zeros((n, 1), np.float32)
    gripper[n // 3] = 1.0  # close
    gripper[2 * n // 3] = -1.0  # open
    steps = {"observation": {"image": frames(n, 12, 16, seed),
                             "natural_language_instruction": [instruction] * n,
                             "natural_language_embedding": rng.normal(size=(n, 8)).astype(np.float32),
                             "base_pose_tool_reached": rng.normal(size=(n, 7)).astype(np.float32),
                             "gripper_closed": rng.uniform(size=(n, 1)).astype(np.float32)},
             "action": {"world_vector": rng.normal(size=(n, 3)).astype(np.float32),
                        "rotation_delta": rng.normal(size=(n, 3)).astype(np.float32),
                        "gripper_closedness_action": gripper,
                        "terminate_episode": np.tile(np.int32([0, 1, 0]), (n, 1)),
                        "base_displacement_vector": np.zeros((n, 2), np.float32),
                        "base_displacement_vertical_rotation": np.zeros((n, 1), np.float32)},
             **_flags(n)}
    return steps, {}


BRIDGE_FEATURES = rlds_features(
    {"observation": features_dict({"image_0": image(16, 20), "image_1": image(16, 20), "state": tensor([7])}),
     "action": tensor([7]), "language_instruction": text(), "is_first": scalar("bool"), "is_last": scalar("bool"),
     "is_terminal": scalar("bool"), "reward": scalar("float32"), "discount": scalar("float32")},
    {"file_path": text()})

FRACTAL_FEATURES = rlds_features(
    {"observation": features_dict({"image": image(12, 16), "natural_language_instruction": tensor([], "string"),
                                   "natural_language_embedding": tensor([8]), "base_pose_tool_reached": tensor([7]),
                                   "gripper_closed": tensor([1])}),
     "action": features_dict({"world_vector": tensor([3]), "rotation_delta": tensor([3]),
                              "gripper_closedness_action": tensor([1]), "terminate_episode": tensor([3], "int32"),
                              "base_displacement_vector": tensor([2]),
                              "base_displacement_vertical_rotation": tensor([1])}),
     "is_first": scalar("bool"), "is_last": scalar("bool"), "is_terminal": scalar("bool"),
     "reward": scalar("float32"), "discount": scalar("float32")},
    {})


def _flatten(tree, prefix, out):
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            _flatten(value, name, out)
        elif isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 4:
            out[name] = [png(f) for f in value]
        else:
            out[name] = value
    return out


def write_rlds(root: Path, name: str, features: dict, episodes: list, version: str = "1.0.0",
               shards: int = 2) -> Path:
    """Write episodes [(steps, episode_metadata)] as <root>/<name>/<version>/ in the TFDS layout."""
    folder = root / name / version
    folder.mkdir(parents=True)
    (folder / "features.json").write_text(json.dumps(features))
    examples = [encode_example({**_flatten(steps, "steps", {}), **_flatten(meta, "episode_metadata", {})})
                for steps, meta in episodes]
    parts = np.array_split(np.arange(len(examples)), shards)
    for i, part in enumerate(parts):
        write_records(folder / f"{name}-train.tfrecord-{i:05d}-of-{shards:05d}", [examples[j] for j in part])
    info = {"name": name, "version": version, "fileFormat": "tfrecord",
            "splits": [{"name": "train", "shardLengths": [str(len(p)) for p in parts],
                        "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}]}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder
