"""Open X-Embodiment standardisation transforms, in numpy, after the reference's ``rlds/oxe/transforms.py``.

A trajectory is a dict of arrays with a leading time axis: ``observation`` (dict), ``action`` (array or
dict), ``language_instruction`` (array of str) and other step keys, plus ``traj_metadata`` (left alone).
Each transform returns a 7-D ``action`` (EEF deltas + gripper) whose gripper is **1 = open, 0 = closed**,
and adds the observation keys the dataset's config names in ``state_obs_keys``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

Trajectory = dict[str, Any]


# -- gripper and action helpers (reference: rlds/utils/data_utils.py) --------------------------------
def binarize_gripper_actions(actions: np.ndarray) -> np.ndarray:
    """Continuous gripper actions to 0/1: > 0.95 open, < 0.05 closed, in-between values take the next
    settled value (a reverse scan starting from the last action, which stays as is if unsettled)."""
    actions = np.asarray(actions, dtype=np.float32)
    open_mask, closed_mask = actions > 0.95, actions < 0.05
    in_between = ~(open_mask | closed_mask)
    out = np.empty_like(actions)
    carry = actions[-1] if len(actions) else 0.0
    for i in range(len(actions) - 1, -1, -1):
        if not in_between[i]:
            carry = float(open_mask[i])
        out[i] = carry
    return out


def rel2abs_gripper_actions(actions: np.ndarray) -> np.ndarray:
    """Relative gripper actions (+1 closing, -1 opening, threshold 0.1) to absolute 0 = closed, 1 = open.

    The signal holds its last command; before the first command it is the opposite of that command
    (open when the trajectory never commands the gripper).
    """
    actions = np.asarray(actions, dtype=np.float32)
    thresholded = np.where(actions < -0.1, 1, np.where(actions > 0.1, -1, 0))
    nonzero = np.flatnonzero(thresholded)
    start = -thresholded[nonzero[0]] if len(nonzero) else 1
    out = np.empty(len(actions), np.float32)
    carry = start
    for i, t in enumerate(thresholded):
        carry = carry if t == 0 else t
        out[i] = carry
    return out / 2 + 0.5


def invert_gripper_actions(actions: np.ndarray) -> np.ndarray:
    return 1.0 - np.asarray(actions, dtype=np.float32)


def _time_map(traj: Trajectory, fn: Callable[[np.ndarray], np.ndarray]) -> Trajectory:
    """Apply ``fn`` to every per-step array (not to ``traj_metadata``)."""
    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        return fn(x)

    return {k: (v if k == "traj_metadata" else walk(v)) for k, v in traj.items()}


def relabel_bridge_actions(traj: Trajectory) -> Trajectory:
    """Movement actions from reached states: ``state[t+1, :6] - state[t, :6]``; drops the last step."""
    state = traj["observation"]["state"]
    movement = state[1:, :6] - state[:-1, :6]
    out = _time_map(traj, lambda x: x[:-1])
    out["action"] = np.concatenate([movement, traj["action"][:-1, -1:]], axis=1).astype(np.float32)
    return out


def quaternion_to_euler(q: np.ndarray) -> np.ndarray:
    """Quaternions [..., 4] as (x, y, z, w) to roll/pitch/yaw, as ``tensorflow_graphics`` ``euler.from_quaternion``."""
    x, y, z, w = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    r00 = np.clip(1 - 2 * (y * y + z * z), -1, 1)
    r10 = np.clip(2 * (x * y + w * z), -1, 1)
    r21 = np.clip(2 * (y * z + w * x), -1, 1)
    r22 = np.clip(1 - 2 * (x * x + y * y), -1, 1)
    r20 = np.clip(2 * (x * z - w * y), -1, 1)
    return np.stack([np.arctan2(r21, r22), -np.arcsin(r20), np.arctan2(r10, r00)], -1).astype(np.float32)


def _cat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float32).reshape(len(p), -1) for p in parts], axis=1)


def _instruction_from_observation(traj: Trajectory) -> Trajectory:
    traj["language_instruction"] = traj["observation"]["natural_language_instruction"]
    return traj


def _world_rot_gripper(traj: Trajectory, gripper: np.ndarray) -> np.ndarray:
    a = traj["action"]
    return _cat(a["world_vector"], a["rotation_delta"], gripper)


# -- per-dataset transforms -----------------------------------------------------------------------------
def bridge_oxe(traj: Trajectory) -> Trajectory:
    traj = _time_map(traj, lambda x: x[1:])  # the first step's action is all zeros
    a = traj["action"]
    traj["action"] = _cat(a["world_vector"], a["rotation_delta"], a["open_gripper"])
    traj = relabel_bridge_actions(_instruction_from_observation(traj))
    traj["observation"]["EEF_state"] = traj["observation"]["state"][:, :6]
    traj["observation"]["gripper_state"] = traj["observation"]["state"][:, -1:]
    return traj


def bridge_orig(traj: Trajectory) -> Trajectory:
    traj = _time_map(traj, lambda x: x[1:])  # the first step's action is all zeros
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :6], binarize_gripper_actions(a[:, -1]))
    traj = relabel_bridge_actions(traj)
    traj["observation"]["EEF_state"] = traj["observation"]["state"][:, :6]
    traj["observation"]["gripper_state"] = traj["observation"]["state"][:, -1:]
    return traj


def rt1(traj: Trajectory) -> Trajectory:
    gripper = rel2abs_gripper_actions(traj["action"]["gripper_closedness_action"][:, 0])
    traj["action"] = _world_rot_gripper(traj, gripper)
    return _instruction_from_observation(traj)


def kuka(traj: Trajectory) -> Trajectory:
    traj = rt1(traj)
    obs = traj["observation"]

    def inflate(values: np.ndarray, width: int) -> np.ndarray:
        return np.stack([np.frombuffer(zlib.decompress(v), np.float32).reshape(width) for v in values])

    obs["clip_function_input/base_pose_tool_reached"] = inflate(obs["clip_function_input/base_pose_tool_reached"], 7)
    obs["gripper_closed"] = inflate(obs["gripper_closed"], 1)
    return traj


def taco_play(traj: Trajectory) -> Trajectory:
    obs = traj["observation"]
    obs["state_eef"] = obs["robot_obs"][:, :6]
    obs["state_gripper"] = obs["robot_obs"][:, 7:8]
    a = traj["action"]["rel_actions_world"]
    traj["action"] = _cat(a[:, :6], np.clip(a[:, -1:], 0, 1))
    return _instruction_from_observation(traj)


def jaco_play(traj: Trajectory) -> Trajectory:
    obs = traj["observation"]
    obs["state_eef"] = obs["end_effector_cartesian_pos"][:, :6]
    obs["state_gripper"] = obs["end_effector_cartesian_pos"][:, -1:]
    gripper = rel2abs_gripper_actions(traj["action"]["gripper_closedness_action"][:, 0])
    world = traj["action"]["world_vector"]
    traj["action"] = _cat(world, np.zeros_like(world), gripper)
    return _instruction_from_observation(traj)


def berkeley_cable_routing(traj: Trajectory) -> Trajectory:
    world = traj["action"]["world_vector"]
    traj["action"] = _world_rot_gripper(traj, np.zeros((len(world), 1), np.float32))
    return _instruction_from_observation(traj)


def roboturk(traj: Trajectory) -> Trajectory:
    gripper = invert_gripper_actions(np.clip(traj["action"]["gripper_closedness_action"], 0, 1))
    traj["action"] = _world_rot_gripper(traj, gripper)
    return _instruction_from_observation(traj)


def nyu_door_opening(traj: Trajectory) -> Trajectory:
    return rt1(traj)


viola = roboturk


def berkeley_autolab_ur5(traj: Trajectory) -> Trajectory:
    obs = traj["observation"]
    obs["state"] = obs["robot_state"][:, 6:14]
    if "image_with_depth" in obs:
        obs["depth"] = obs.pop("image_with_depth")
    gripper = rel2abs_gripper_actions(np.asarray(traj["action"]["gripper_closedness_action"]).reshape(-1))
    traj["action"] = _world_rot_gripper(traj, gripper)
    return _instruction_from_observation(traj)


def toto(traj: Trajectory) -> Trajectory:
    traj["action"] = _world_rot_gripper(traj, traj["action"]["open_gripper"])
    return _instruction_from_observation(traj)


def language_table(traj: Trajectory) -> Trajectory:
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a, np.zeros_like(a), np.zeros_like(a), np.ones((len(a), 1)))
    codes = np.asarray(traj["observation"]["instruction"]).reshape(len(a), -1)
    traj["language_instruction"] = np.array(
        ["".join(chr(c) for c in row).split("\x00")[0] for row in codes], dtype=object)
    return traj


def _invert_clip_last(traj: Trajectory) -> Trajectory:
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :6], invert_gripper_actions(np.clip(a[:, -1:], 0, 1)))
    return traj


def stanford_hydra(traj: Trajectory) -> Trajectory:
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :6], invert_gripper_actions(a[:, -1:]))
    state = traj["observation"]["state"]
    traj["observation"]["eef_state"] = _cat(state[:, :3], state[:, 7:10])
    traj["observation"]["gripper_state"] = state[:, -3:-2]
    return traj


def austin_buds(traj: Trajectory) -> Trajectory:
    traj = _invert_clip_last(traj)
    traj["observation"]["state"] = traj["observation"]["state"][:, :8]
    return traj


def nyu_franka_play(traj: Trajectory) -> Trajectory:
    obs = traj["observation"]
    obs["eef_state"] = obs["state"][:, -6:]
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, -8:-2], np.clip(a[:, -2:-1], 0, 1))
    return traj


def furniture_bench(traj: Trajectory) -> Trajectory:
    state = traj["observation"]["state"]
    traj["observation"]["state"] = _cat(state[:, :7], state[:, -1:])
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :3], quaternion_to_euler(a[:, 3:7]),
                          invert_gripper_actions(np.clip(a[:, -1:], 0, 1)))
    return traj


def ucsd_kitchen(traj: Trajectory) -> Trajectory:
    traj["observation"]["joint_state"] = traj["observation"]["state"][:, :7]
    traj["action"] = np.asarray(traj["action"], dtype=np.float32)[:, :-1]
    return traj


austin_sailor = _invert_clip_last
austin_sirius = _invert_clip_last


def dlr_edan_shared_control(traj: Trajectory) -> Trajectory:
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :6], invert_gripper_actions(a[:, -1:]))
    return traj


def iamlab_cmu_pickup_insert(traj: Trajectory) -> Trajectory:
    state = traj["observation"]["state"]
    traj["observation"]["joint_state"] = state[:, :7]
    traj["observation"]["gripper_state"] = state[:, 7:8]
    a = np.asarray(traj["action"], dtype=np.float32)
    traj["action"] = _cat(a[:, :3], quaternion_to_euler(a[:, 3:7]), a[:, 7:8])
    return traj


def utaustin_mutex(traj: Trajectory) -> Trajectory:
    traj = _invert_clip_last(traj)
    traj["observation"]["state"] = traj["observation"]["state"][:, :8]
    return traj


def berkeley_fanuc_manipulation(traj: Trajectory) -> Trajectory:
    state = traj["observation"]["state"]
    traj["observation"]["joint_state"] = state[:, :6]
    traj["observation"]["gripper_state"] = state[:, 6:7]
    # the dataset stores no gripper action: use the gripper state, inverted so 1 = open
    traj["action"] = _cat(traj["action"], invert_gripper_actions(state[:, 6:7]))
    return traj


def cmu_stretch(traj: Trajectory) -> Trajectory:
    state = traj["observation"]["state"]
    traj["observation"]["eef_state"] = _cat(state[:, :3], np.zeros_like(state[:, :3]))
    traj["observation"]["gripper_state"] = state[:, -1:]
    traj["action"] = np.asarray(traj["action"], dtype=np.float32)[:, :-1]
    return traj


def bc_z(traj: Trajectory) -> Trajectory:
    a = traj["action"]
    close = np.asarray(a["future/target_close"], dtype=np.float32).reshape(len(a["future/target_close"]), -1)
    traj["action"] = _cat(np.asarray(a["future/xyz_residual"])[:, :3],
                          np.asarray(a["future/axis_angle_residual"])[:, :3], invert_gripper_actions(close[:, :1]))
    return _instruction_from_observation(traj)


def fmb(traj: Trajectory) -> Trajectory:
    obs = traj["observation"]
    obs["proprio"] = _cat(obs["eef_pose"], obs["state_gripper_pose"])
    return traj


def dobbe(traj: Trajectory) -> Trajectory:
    traj["observation"]["proprio"] = traj["observation"]["state"]
    return traj


def droid(traj: Trajectory) -> Trajectory:
    """DROID with base-frame velocity actions; the reference's random exterior-camera swap is not applied."""
    a = traj["action_dict"]
    traj["action"] = _cat(a["cartesian_velocity"][:, :3], a["cartesian_velocity"][:, 3:6],
                          1 - np.asarray(a["gripper_position"], dtype=np.float32))
    obs = traj["observation"]
    obs["proprio"] = _cat(obs["cartesian_position"], obs["gripper_position"])
    return traj


def libero(traj: Trajectory) -> Trajectory:
    """LIBERO: gripper -1 (open) .. 1 (close) clipped to [0, 1] and inverted; 2-D gripper state."""
    traj = _invert_clip_last(traj)
    state = traj["observation"]["state"]
    traj["observation"]["EEF_state"] = state[:, :6]
    traj["observation"]["gripper_state"] = state[:, -2:]
    return traj


STANDARDIZE: dict[str, Callable[[Trajectory], Trajectory]] = {
    "bridge_oxe": bridge_oxe,
    "bridge_orig": bridge_orig,
    "bridge_dataset": bridge_orig,
    "fractal20220817_data": rt1,
    "kuka": kuka,
    "taco_play": taco_play,
    "jaco_play": jaco_play,
    "berkeley_cable_routing": berkeley_cable_routing,
    "roboturk": roboturk,
    "nyu_door_opening_surprising_effectiveness": nyu_door_opening,
    "viola": viola,
    "berkeley_autolab_ur5": berkeley_autolab_ur5,
    "toto": toto,
    "language_table": language_table,
    "stanford_hydra_dataset_converted_externally_to_rlds": stanford_hydra,
    "austin_buds_dataset_converted_externally_to_rlds": austin_buds,
    "nyu_franka_play_dataset_converted_externally_to_rlds": nyu_franka_play,
    "furniture_bench_dataset_converted_externally_to_rlds": furniture_bench,
    "ucsd_kitchen_dataset_converted_externally_to_rlds": ucsd_kitchen,
    "austin_sailor_dataset_converted_externally_to_rlds": austin_sailor,
    "austin_sirius_dataset_converted_externally_to_rlds": austin_sirius,
    "dlr_edan_shared_control_converted_externally_to_rlds": dlr_edan_shared_control,
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds": iamlab_cmu_pickup_insert,
    "utaustin_mutex": utaustin_mutex,
    "berkeley_fanuc_manipulation": berkeley_fanuc_manipulation,
    "cmu_stretch": cmu_stretch,
    "bc_z": bc_z,
    "fmb_dataset": fmb,
    "dobbe": dobbe,
    "droid": droid,
    "libero_spatial_no_noops": libero,
    "libero_object_no_noops": libero,
    "libero_goal_no_noops": libero,
    "libero_10_no_noops": libero,
}
