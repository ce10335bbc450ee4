"""Closed-loop evaluation of any Policy on Meta-World or LIBERO, resumable, with videos and a report."""

from __future__ import annotations

import importlib
import json
import time
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from openvla.policy import Policy
from openvla.sim.policies import load_policy
from openvla.sim.report import build_eval_info, write_report, write_video
from openvla.sim.rollout import EnvPool, EpisodeResult, EpisodeSpec, run_episodes

ENVS = {"metaworld": "openvla.sim.metaworld", "libero": "openvla.sim.libero"}
_RESUME_IGNORES = ("num_envs", "video_episodes")  # settings that may change between an eval and its resume


def get_env_module(env: str) -> ModuleType:
    """The adapter module of a simulator: resolve_tasks, task_group, episode_seed, max_steps_for, make_env."""
    if env not in ENVS:
        raise ValueError(f"unknown env {env!r}; choose from {', '.join(ENVS)}")
    return importlib.import_module(ENVS[env])


def _episode_row(result: EpisodeResult, group: str) -> dict[str, Any]:
    spec = result.spec
    return {"task": spec.task, "group": group, "episode_ix": spec.episode, "seed": spec.seed,
            "sum_reward": result.sum_reward, "max_reward": result.max_reward, "success": result.success,
            "n_steps": result.steps, "error": result.error, "seconds": round(result.seconds, 3)}


class _EpisodeLog:
    """episodes.jsonl in the output dir: one line per finished episode, so an interrupted eval resumes."""

    def __init__(self, out_dir: Path | None, config: dict[str, Any]):
        self.rows: list[dict[str, Any]] = []
        self.path = None if out_dir is None else out_dir / "episodes.jsonl"
        if out_dir is None:
            return
        config_path = out_dir / "eval_config.json"
        if config_path.exists():
            old = json.loads(config_path.read_text())
            diff = sorted(k for k in set(old) | set(config)
                          if k not in _RESUME_IGNORES and old.get(k) != config.get(k))
            if diff:
                raise ValueError(f"{out_dir} holds an evaluation with other settings ({', '.join(diff)}); "
                                 "use another --out or delete it")
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config, indent=2))
        if self.path.exists():
            self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def done(self) -> set[tuple[str, int]]:
        return {(r["task"], r["episode_ix"]) for r in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def _check_cameras(policy: Policy, sim: ModuleType, extra_cameras: list[str] | tuple[str, ...]) -> None:
    """Fail before the first episode when a model takes simulator cameras the env was not asked to render."""
    cameras = getattr(getattr(getattr(policy, "vla", None), "config", None), "cameras", None) or []
    missing = [c for c in cameras[1:] if c in getattr(sim, "CAMERAS", ()) and c not in extra_cameras]
    if missing:
        raise ValueError(f"the policy takes cameras {list(cameras)}; render the missing ones with "
                         f"--extra-cameras {' '.join(c for c in cameras[1:] if c in sim.CAMERAS)}")


def evaluate(policy: Policy | str, env: str = "metaworld", tasks: str | list[str] = "mt10",
             episodes_per_task: int = 10, seed: int = 0, out_dir: str | Path | None = None, num_envs: int = 1,
             max_steps: int | None = None, open_loop_steps: int | None = None, video_episodes: int = 1,
             image_size: int | None = None, camera: str | None = None, progress: bool = True,
             policy_kwargs: dict[str, Any] | None = None, env_kwargs: dict[str, Any] | None = None,
             temporal_ensemble: float | None = None, extra_cameras: list[str] | None = None) -> dict[str, Any]:
    """Run `episodes_per_task` episodes of each task and return eval_info (also written to `out_dir`).

    Evaluation seeds never meet demonstration seeds (see ``episode_seed``). Finished episodes are appended
    to ``out_dir/episodes.jsonl`` as they end; running again with the same settings resumes. `env_kwargs`
    go to the env (e.g. fast_render, and for LIBERO gripper="openvla"|"raw"). `temporal_ensemble` (a decay,
    ACT uses 0.01) asks the policy every step and executes the weighted mean of the chunks' predictions.
    `extra_cameras` (Meta-World) are rendered too and given to the policy by name, beside the primary
    ``image``; videos stay of the primary camera.
    """
    sim = get_env_module(env)
    task_list = sim.resolve_tasks(tasks)
    image_size = image_size or sim.DEFAULT_IMAGE_SIZE
    camera = camera or sim.DEFAULT_CAMERA
    if extra_cameras:
        if not hasattr(sim, "check_cameras"):
            raise ValueError(f"{env} renders no extra cameras; --extra-cameras applies to metaworld")
        env_kwargs = {**(env_kwargs or {}), "extra_cameras": list(sim.check_cameras(camera, extra_cameras))}
    name = policy if isinstance(policy, str) else type(policy).__name__
    if name == "expert" and env != "metaworld":
        raise ValueError(f"there are no scripted experts for {env}; try --policy random or a checkpoint")
    if isinstance(policy, str):
        policy = load_policy(policy, action_dim=sim.ACTION_DIM, seed=seed, **(policy_kwargs or {}))
    _check_cameras(policy, sim, (env_kwargs or {}).get("extra_cameras", ()))
    config = {"policy": name, "env": env, "tasks": task_list, "episodes_per_task": episodes_per_task,
              "seed": seed, "max_steps": max_steps, "open_loop_steps": open_loop_steps,
              "image_size": image_size, "camera": camera, "num_envs": num_envs,
              "video_episodes": video_episodes, "env_kwargs": env_kwargs or {}}
    if temporal_ensemble is not None:
        config["temporal_ensemble"] = temporal_ensemble
    out = None if out_dir is None else Path(out_dir)
    log = _EpisodeLog(out, config)
    done = log.done()
    specs = [EpisodeSpec(task, i, sim.episode_seed("eval", seed, task, i),
                         max_steps or sim.max_steps_for(task), record=out is not None and i < video_episodes)
             for task in task_list for i in range(episodes_per_task) if (task, i) not in done]
    factory = partial(sim.make_env, image_size=image_size, camera=camera, max_steps=max_steps,
                      **(env_kwargs or {}))
    total = len(task_list) * episodes_per_task
    bar = tqdm(total=total, initial=total - len(specs), desc=f"eval {name}", unit="ep", disable=not progress,
               dynamic_ncols=True)
    start, n_run, complete = time.perf_counter(), 0, False

    def show(step: int | None = None) -> None:
        rate = 100 * sum(r["success"] for r in log.rows) / max(1, len(log.rows))
        text = f"success {rate:.1f}%" + ("" if step is None else f", step {step}")
        bar.set_postfix_str(text, refresh=False)

    try:
        with EnvPool(factory, num_envs) as pool:
            for result in run_episodes(policy, specs, pool, sim.ACTION_DIM, open_loop_steps, on_step=show,
                                       temporal_ensemble=temporal_ensemble):
                row = _episode_row(result, sim.task_group(result.spec.task))
                if result.frames and out is not None:
                    video = out / "videos" / result.spec.task / f"eval_episode_{result.spec.episode}.mp4"
                    row["video_path"] = str(write_video(video, result.frames, sim.FPS))
                log.add(row)
                n_run += 1
                bar.update()
                show()
        complete = True
    finally:
        bar.close()
        info = build_eval_info(log.rows, config, time.perf_counter() - start, n_run, complete)
        if out is not None:
            write_report(out, info)
    return info
