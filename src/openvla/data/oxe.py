"""Open X-Embodiment dataset configs, standardisation and named mixtures, after OpenVLA's ``rlds/oxe``.

``standardize(name, trajectory)`` applies the dataset's transform (see ``oxe_transforms``) and
``restructure`` turns the result into an ``Episode``: camera roles ``primary``/``secondary``/``wrist`` become
cameras ``image``/``secondary``/``wrist``, the proprio is the concatenation of ``state_obs_keys`` (a zero
column per ``None``), and the instruction is the first non-empty step instruction (with every step's in
``Episode.instructions`` when they differ, as the reference reads each step's own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from openvla.data.episodes import Episode
from openvla.data.image_decode import decode_image
from openvla.data.oxe_transforms import STANDARDIZE, Trajectory


class StateEncoding(IntEnum):
    NONE = -1
    POS_EULER = 1  # EEF XYZ (3) + roll-pitch-yaw (3) + <PAD> (1) + gripper (1)
    POS_QUAT = 2  # EEF XYZ (3) + quaternion (4) + gripper (1)
    JOINT = 3  # joint angles (7, padded) + gripper (1)
    JOINT_BIMANUAL = 4


class ActionEncoding(IntEnum):
    EEF_POS = 1  # EEF delta XYZ (3) + roll-pitch-yaw (3) + gripper (1)
    JOINT_POS = 2
    JOINT_POS_BIMANUAL = 3
    EEF_R6 = 4  # EEF delta XYZ (3) + R6 (6) + gripper (1)


CAMERA_NAMES = {"primary": "image", "secondary": "secondary", "wrist": "wrist"}


@dataclass(frozen=True)
class DatasetConfig:
    """How one RLDS dataset maps to an episode: camera keys per role, proprio keys, encodings."""

    image_obs_keys: dict[str, str | None]
    state_obs_keys: list[str | None]
    state_encoding: StateEncoding = StateEncoding.POS_EULER
    action_encoding: ActionEncoding = ActionEncoding.EEF_POS
    depth_obs_keys: dict[str, str | None] = field(default_factory=dict)

    @property
    def action_mask(self) -> list[bool]:
        """The reference's normalisation mask: every dimension but the gripper."""
        dims = {ActionEncoding.EEF_POS: 7, ActionEncoding.EEF_R6: 10, ActionEncoding.JOINT_POS: 8}
        n = dims.get(self.action_encoding, 7)
        return [True] * (n - 1) + [False]


def _cfg(primary: str | None, state: list[str | None], enc: StateEncoding = StateEncoding.POS_EULER,
         secondary: str | None = None, wrist: str | None = None) -> DatasetConfig:
    return DatasetConfig({"primary": primary, "secondary": secondary, "wrist": wrist}, state, enc)


_EULER, _QUAT, _JOINT, _NONE = StateEncoding.POS_EULER, StateEncoding.POS_QUAT, StateEncoding.JOINT, StateEncoding.NONE
_BRIDGE = _cfg("image_0", ["EEF_state", None, "gripper_state"], _EULER, secondary="image_1")
_LIBERO = _cfg("image", ["EEF_state", "gripper_state"], _EULER, wrist="wrist_image")
_EXT = "_converted_externally_to_rlds"

OXE_DATASET_CONFIGS: dict[str, DatasetConfig] = {
    "fractal20220817_data": _cfg("image", ["base_pose_tool_reached", "gripper_closed"], _QUAT),
    "kuka": _cfg("image", ["clip_function_input/base_pose_tool_reached", "gripper_closed"], _QUAT),
    "bridge_oxe": _cfg("image", ["EEF_state", None, "gripper_state"], _EULER, secondary="image_1"),
    "bridge_orig": _BRIDGE,
    "bridge_dataset": _BRIDGE,
    "taco_play": _cfg("rgb_static", ["state_eef", None, "state_gripper"], _EULER, wrist="rgb_gripper"),
    "jaco_play": _cfg("image", ["state_eef", None, "state_gripper"], _EULER, wrist="image_wrist"),
    "berkeley_cable_routing": _cfg("image", ["robot_state", None], _JOINT, secondary="top_image",
                                   wrist="wrist45_image"),
    "roboturk": _cfg("front_rgb", [None] * 8, _NONE),
    "nyu_door_opening_surprising_effectiveness": _cfg(None, [None] * 8, _NONE, wrist="image"),
    "viola": _cfg("agentview_rgb", ["joint_states", "gripper_states"], _JOINT, wrist="eye_in_hand_rgb"),
    "berkeley_autolab_ur5": _cfg("image", ["state"], _QUAT, wrist="hand_image"),
    "toto": _cfg("image", ["state", None], _JOINT),
    "language_table": _cfg("rgb", ["effector_translation", None, None, None, None, None, None], _EULER),
    f"stanford_hydra_dataset{_EXT}": _cfg("image", ["eef_state", None, "gripper_state"], _EULER,
                                          wrist="wrist_image"),
    f"austin_buds_dataset{_EXT}": _cfg("image", ["state"], _JOINT, wrist="wrist_image"),
    f"nyu_franka_play_dataset{_EXT}": _cfg("image", ["eef_state", None, None], _EULER,
                                           secondary="image_additional_view"),
    f"furniture_bench_dataset{_EXT}": _cfg("image", ["state"], _QUAT, wrist="wrist_image"),
    f"ucsd_kitchen_dataset{_EXT}": _cfg("image", ["joint_state", None], _JOINT),
    f"austin_sailor_dataset{_EXT}": _cfg("image", ["state"], _QUAT, wrist="wrist_image"),
    f"austin_sirius_dataset{_EXT}": _cfg("image", ["state"], _QUAT, wrist="wrist_image"),
    f"dlr_edan_shared_control{_EXT}": _cfg("image", ["state", None], _EULER),
    f"iamlab_cmu_pickup_insert{_EXT}": _cfg("image", ["joint_state", "gripper_state"], _JOINT,
                                            wrist="wrist_image"),
    "utaustin_mutex": _cfg("image", ["state"], _JOINT, wrist="wrist_image"),
    "berkeley_fanuc_manipulation": _cfg("image", ["joint_state", None, "gripper_state"], _JOINT,
                                        wrist="wrist_image"),
    "cmu_stretch": _cfg("image", ["eef_state", None, "gripper_state"], _EULER),
    "bc_z": _cfg("image", ["present/xyz", "present/axis_angle", None, "present/sensed_close"], _EULER),
    "fmb_dataset": _cfg("image_side_1", ["proprio"], _EULER, secondary="image_side_2", wrist="image_wrist_1"),
    "dobbe": _cfg("wrist_image", ["proprio"], _EULER),
    "droid": _cfg("exterior_image_1_left", ["proprio"], _QUAT, secondary="exterior_image_2_left",
                  wrist="wrist_image_left"),
    "libero_spatial_no_noops": _LIBERO,
    "libero_object_no_noops": _LIBERO,
    "libero_goal_no_noops": _LIBERO,
    "libero_10_no_noops": _LIBERO,
}

_MAGIC_SOUP_BASE = [
    ("kuka", 0.8341046294), ("bridge_orig", 1.0), ("taco_play", 2.0), ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0), ("roboturk", 2.0), ("viola", 2.0), ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
]
_MAGIC_SOUP_REST = [
    (f"stanford_hydra_dataset{_EXT}", 2.0), (f"austin_buds_dataset{_EXT}", 1.0),
    (f"nyu_franka_play_dataset{_EXT}", 3.0), (f"furniture_bench_dataset{_EXT}", 0.1),
    (f"ucsd_kitchen_dataset{_EXT}", 2.0), (f"austin_sailor_dataset{_EXT}", 1.0),
    (f"austin_sirius_dataset{_EXT}", 1.0), (f"dlr_edan_shared_control{_EXT}", 1.0),
    (f"iamlab_cmu_pickup_insert{_EXT}", 1.0), ("utaustin_mutex", 1.0), ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
]
_LIBERO_SUITES = ["libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops", "libero_10_no_noops"]

# Weights before balancing; the reference multiplies each by the dataset's transition count (balanced).
OXE_NAMED_MIXTURES: dict[str, list[tuple[str, float]]] = {
    "bridge": [("bridge_orig", 1.0)],
    "bridge_rt_1": [("bridge_orig", 1.0), ("fractal20220817_data", 1.0)],
    "rtx": [("fractal20220817_data", 0.54087122203), ("kuka", 0.8341046294), ("bridge_orig", 1.0),
            ("taco_play", 2.0), ("jaco_play", 2.0), ("berkeley_cable_routing", 3.0), ("roboturk", 1.0),
            ("viola", 2.0), ("berkeley_autolab_ur5", 1.0), ("toto", 1.0)],
    "oxe_magic_soup": [("fractal20220817_data", 0.54087122203), *_MAGIC_SOUP_BASE, ("language_table", 0.1),
                       *_MAGIC_SOUP_REST],
    "oxe_magic_soup_plus": [("fractal20220817_data", 0.54087122203), *_MAGIC_SOUP_BASE, ("language_table", 0.1),
                            *_MAGIC_SOUP_REST, ("bc_z", 0.2), ("fmb_dataset", 1.0), ("dobbe", 0.2),
                            ("droid", 0.06)],
    "oxe_magic_soup_plus_minus": [("fractal20220817_data", 1.0), *_MAGIC_SOUP_BASE, *_MAGIC_SOUP_REST,
                                  ("bc_z", 0.2), ("fmb_dataset", 1.0), ("dobbe", 0.2)],
    **{suite: [(suite, 1.0)] for suite in _LIBERO_SUITES},
    "libero_mix": [(suite, 1.0) for suite in _LIBERO_SUITES],
}


def get_config(name: str) -> DatasetConfig:
    """The OXE config of a dataset, with a clear error listing the known names."""
    if name not in OXE_DATASET_CONFIGS:
        raise KeyError(f"no OXE config for dataset {name!r}; known: {', '.join(sorted(OXE_DATASET_CONFIGS))}")
    return OXE_DATASET_CONFIGS[name]


def get_mixture(name: str) -> list[tuple[str, float]]:
    """The (dataset, weight) list of a named mixture (weights before balancing)."""
    if name not in OXE_NAMED_MIXTURES:
        raise KeyError(f"no mixture {name!r}; known: {', '.join(sorted(OXE_NAMED_MIXTURES))}")
    return list(OXE_NAMED_MIXTURES[name])


def balanced_weights(weights: list[float], num_transitions: list[int]) -> list[float]:
    """Sampling probabilities as the reference's ``balance_weights``: weight x transitions, normalised."""
    w = np.asarray(weights, dtype=np.float64) * np.asarray(num_transitions, dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("mixture has no transitions to sample")
    return (w / w.sum()).tolist()


def mixture_length(weights: list[float], num_transitions: list[int]) -> int:
    """The reference's dataset length: max over datasets of weight 1.0 of transitions / probability."""
    probs = balanced_weights(weights, num_transitions)
    primary = [n / p for w, n, p in zip(weights, num_transitions, probs, strict=True) if w == 1.0 and p > 0]
    return int(max(primary)) if primary else int(sum(num_transitions))


def standardize(name: str, trajectory: Trajectory) -> Trajectory:
    """Apply the dataset's standardisation transform (identity for datasets without one)."""
    fn = STANDARDIZE.get(name)
    return fn(trajectory) if fn else trajectory


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def restructure(trajectory: Trajectory, config: DatasetConfig, name: str, index: int,
                cameras: list[str] | None = None, where: str = "", jpeg_decoder: str = "reference") -> Episode:
    """An ``Episode`` from a standardised trajectory (roles in ``cameras``, default every role present);
    ``jpeg_decoder`` as ``image_decode.decode_image``."""
    obs = trajectory["observation"]
    where = where or f"episode {index} of {name!r}"
    actions = np.asarray(trajectory["action"], dtype=np.float32)
    if actions.ndim != 2:
        raise ValueError(f"{where}: standardised action must be [T, D], got {actions.shape}")
    length = len(actions)
    images = {}
    for role, key in config.image_obs_keys.items():
        if key is None or (cameras is not None and role not in cameras):
            continue
        if key not in obs:
            raise ValueError(f"{where}: camera {role!r} (observation key {key!r}) is missing; "
                             f"observation keys: {sorted(obs)}")
        images[CAMERA_NAMES[role]] = np.stack([decode_image(im, jpeg_decoder, where) for im in obs[key]]) if length else \
            np.zeros((0, 1, 1, 3), np.uint8)
    for role in cameras or []:
        if CAMERA_NAMES.get(role) not in images:
            raise ValueError(f"{where}: no camera {role!r} in the config of {name!r}")
    states = None
    if any(k is not None for k in config.state_obs_keys):
        parts = []
        for key in config.state_obs_keys:
            if key is None:
                parts.append(np.zeros((length, 1), np.float32))
            elif key not in obs:
                raise ValueError(f"{where}: proprio key {key!r} is missing; observation keys: {sorted(obs)}")
            else:
                parts.append(np.asarray(obs[key], dtype=np.float32).reshape(length, -1))
        states = np.concatenate(parts, axis=1)
    texts = [_text(t).strip() for t in np.asarray(trajectory.get("language_instruction", [])).reshape(-1)]
    instruction = next((t for t in texts if t), "")
    per_step = texts if len(texts) == length and len(set(texts)) > 1 else None
    return Episode(images=images, actions=actions, instruction=instruction, states=states,
                   episode_index=index, dataset_name=name, instructions=per_step)
