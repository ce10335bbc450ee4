"""Meta-World v3: the 50 tasks, the MT10/MT50 sets and difficulty groups, instructions, and a fast env."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence

import numpy as np

from openvla.policy import Observation
from openvla.sim.render import ensure_headless_gl, make_renderer

ENV_NAME = "metaworld"
FPS = 80  # Meta-World's render_fps: 5 physics steps of 2.5 ms per env step
ACTION_DIM = 4  # (dx, dy, dz, gripper) in [-1, 1]
STATE_DIM = 4  # hand xyz + gripper opening (the first 4 values of Meta-World's 39-D observation)
MAX_STEPS = 500  # Meta-World's max_path_length
DEFAULT_CAMERA = "corner2"
DEFAULT_IMAGE_SIZE = 128
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
_UPSIDE_DOWN_CAMERAS = {"corner", "corner2", "corner3", "corner4"}  # rendered rotated by 180 degrees
_CORNER2_POS = (0.75, 0.075, 0.7)  # LeRobot's corner2 placement (closer view of the workspace)

# The difficulty groups of the published MT50 tables (Seo et al., as used by DP3, TinyVLA, SmolVLA, LeRobot).
GROUPS: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press-v3", "button-press-topdown-v3", "button-press-topdown-wall-v3", "button-press-wall-v3",
        "coffee-button-v3", "dial-turn-v3", "door-close-v3", "door-lock-v3", "door-open-v3",
        "door-unlock-v3", "drawer-close-v3", "drawer-open-v3", "faucet-close-v3", "faucet-open-v3",
        "handle-press-v3", "handle-press-side-v3", "handle-pull-v3", "handle-pull-side-v3",
        "lever-pull-v3", "plate-slide-v3", "plate-slide-back-v3", "plate-slide-back-side-v3",
        "plate-slide-side-v3", "reach-v3", "reach-wall-v3", "window-close-v3", "window-open-v3",
        "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3", "bin-picking-v3", "box-close-v3", "coffee-pull-v3", "coffee-push-v3", "hammer-v3",
        "peg-insert-side-v3", "push-wall-v3", "soccer-v3", "sweep-v3", "sweep-into-v3",
    ),
    "hard": (
        "assembly-v3", "hand-insert-v3", "pick-out-of-hole-v3", "pick-place-v3", "push-v3", "push-back-v3",
    ),
    "very_hard": (
        "shelf-place-v3", "disassemble-v3", "stick-pull-v3", "stick-push-v3", "pick-place-wall-v3",
    ),
}

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and put it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "move the puck from one bin into the other bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-v3": "press the button from above",
    "button-press-topdown-wall-v3": "reach over the wall and press the button from above",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "get around the wall and press the button",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial half a turn",
    "disassemble-v3": "take the nut off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock clockwise",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock counter-clockwise",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-close-v3": "turn the faucet handle clockwise",
    "faucet-open-v3": "turn the faucet handle counter-clockwise",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "put the gripper into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up by a quarter turn",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "pull the peg out of the hole sideways",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck, get around the wall and place it at the goal",
    "plate-slide-back-side-v3": "slide the plate out of the cabinet from the side",
    "plate-slide-back-v3": "slide the plate out of the cabinet",
    "plate-slide-side-v3": "slide the plate into the cabinet from the side",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck back to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "reach-v3": "move the gripper to the goal position",
    "reach-wall-v3": "move the gripper over the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "push the ball into the goal",
    "stick-pull-v3": "pick up the stick and pull the box with it",
    "stick-push-v3": "pick up the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "slide the window closed",
    "window-open-v3": "slide the window open",
}

TASKS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))  # MT50, in a fixed order that defines task ids
TASK_ID: dict[str, int] = {task: i for i, task in enumerate(TASKS)}
MT10: tuple[str, ...] = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)
TASK_SETS: dict[str, tuple[str, ...]] = {"mt10": MT10, "mt50": TASKS, **GROUPS}
_GROUP_OF = {task: group for group, tasks in GROUPS.items() for task in tasks}

# Seeds: demonstrations and evaluations draw from disjoint seed sets by construction.
MAX_EPISODES_PER_TASK = 100_000
SPLITS = ("demo", "eval")


def resolve_tasks(spec: str | Iterable[str]) -> list[str]:
    """Expand a set name (mt10, mt50, easy, ...) or comma-separated task names into task names.

    Names may omit the ``-v3`` suffix. An unknown name raises ValueError listing the valid ones.
    """
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    tasks: list[str] = []
    for part in filter(None, parts):
        key = part.lower()
        if key in TASK_SETS:
            found = list(TASK_SETS[key])
        elif key in TASK_ID or f"{key}-v3" in TASK_ID:
            found = [key if key in TASK_ID else f"{key}-v3"]
        else:
            raise ValueError(f"unknown Meta-World task or set {part!r}; sets: {', '.join(TASK_SETS)}; "
                             f"tasks: {', '.join(TASKS)}")
        tasks += [t for t in found if t not in tasks]
    if not tasks:
        raise ValueError("no Meta-World task given")
    return tasks


def check_cameras(camera: str, extra_cameras: Sequence[str] = ()) -> tuple[str, ...]:
    """Validate the primary camera and the extra ones (Meta-World names, distinct); return the extras."""
    extras = tuple(extra_cameras)
    for name in (camera, *extras):
        if name not in CAMERAS:
            raise ValueError(f"unknown Meta-World camera {name!r}; choose from {', '.join(CAMERAS)}")
    if len(set((camera, *extras))) != 1 + len(extras):
        raise ValueError(f"extra cameras {list(extras)} repeat a camera or the primary {camera!r}")
    return extras


def task_group(task: str) -> str:
    """The difficulty group (easy, medium, hard, very_hard) of a task."""
    return _GROUP_OF[task]


def max_steps_for(task: str) -> int:
    """The episode cap of a task (the same 500 for all of Meta-World)."""
    return MAX_STEPS


def episode_seed(split: str, seed: int, task: str, episode: int) -> int:
    """The env seed of one episode: even for demonstrations, odd for evaluation, so the two never meet."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= episode < MAX_EPISODES_PER_TASK or seed < 0:
        raise ValueError(f"need 0 <= episode < {MAX_EPISODES_PER_TASK} and seed >= 0")
    k = (seed * len(TASKS) + TASK_ID[task]) * MAX_EPISODES_PER_TASK + episode
    return 2 * k + SPLITS.index(split)


class MetaWorldEnv:
    """One Meta-World v3 task with per-seed object positions, a fast camera and success at any step."""

    action_dim = ACTION_DIM
    fps = FPS

    def __init__(self, task: str, image_size: int = DEFAULT_IMAGE_SIZE, camera: str = DEFAULT_CAMERA,
                 max_steps: int | None = None, fast_render: bool = True, extra_cameras: Sequence[str] = ()):
        self.extra_cameras = check_cameras(camera, extra_cameras)
        (self.task,) = resolve_tasks([task])
        self.instruction = INSTRUCTIONS[self.task]
        self.camera = camera
        ensure_headless_gl()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.types import Task

        cls = ALL_V3_ENVIRONMENTS[self.task]
        self._env = cls()
        # An MT-style task (goal in the observation) whose object/goal positions come from the env's
        # seeded generator at every reset instead of a frozen vector.
        data = {"env_cls": cls, "rand_vec": np.zeros(0), "partially_observable": False}
        self._env.set_task(Task(env_name=self.task, data=pickle.dumps(data)))
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.max_path_length = max_steps or MAX_STEPS  # Meta-World refuses to step past it
        if "corner2" in (camera, *self.extra_cameras):
            self._env.model.cam_pos[self._env.model.camera("corner2").id] = _CORNER2_POS
        # One renderer (one GL context and buffer) draws every camera: they share the image size.
        self._renderer = make_renderer(self._env.model, image_size, image_size, fast=fast_render)
        self._obs: np.ndarray | None = None

    def reset(self, seed: int, episode: int = 0) -> Observation:
        """Start an episode whose object and goal positions are drawn from `seed`."""
        self._env.seed(int(seed))
        self._obs, _ = self._env.reset()
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        """Apply one 4-D action (clipped to [-1, 1]); return (observation, reward, success)."""
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self._obs, reward, _, _, info = self._env.step(action)
        return self._observation(), float(reward), bool(info["success"])

    def render(self, camera: str | None = None) -> np.ndarray:
        """The image (uint8 HxWx3) of `camera` (default: the primary one) that policies and demonstrations see."""
        camera = camera or self.camera
        self._renderer.update_scene(self._env.data, camera=camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1, ::-1]) if camera in _UPSIDE_DOWN_CAMERAS else image

    def _observation(self) -> Observation:
        assert self._obs is not None
        obs: Observation = {
            "image": self.render(),
            "instruction": self.instruction,
            "state": self._obs[:STATE_DIM].astype(np.float32),
            "task": self.task,
            "sim_state": self._obs.copy(),  # privileged 39-D state, read by the scripted expert only
        }
        if self.extra_cameras:  # each extra camera by its name, at the top level and under "images"
            extras = {name: self.render(name) for name in self.extra_cameras}
            obs.update(extras)
            obs["images"] = {"image": obs["image"], **extras}
        return obs

    def close(self) -> None:
        """Free the GL context and the simulator."""
        self._renderer.close()
        self._env.close()


def make_env(task: str, image_size: int = DEFAULT_IMAGE_SIZE, camera: str = DEFAULT_CAMERA,
             max_steps: int | None = None, fast_render: bool = True,
             extra_cameras: Sequence[str] = ()) -> MetaWorldEnv:
    """The env factory used by evaluation and collection workers."""
    return MetaWorldEnv(task, image_size=image_size, camera=camera, max_steps=max_steps,
                        fast_render=fast_render, extra_cameras=extra_cameras)
