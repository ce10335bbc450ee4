"""Scripted-expert demonstrations on Meta-World, written as a LeRobot dataset; resumable."""

from __future__ import annotations

import json
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from openvla.data.episodes import Episode
from openvla.sim import metaworld as mw
from openvla.sim.experts import ExpertPolicy
from openvla.sim.rollout import EnvPool, EpisodeResult, EpisodeSpec, run_episodes

PARTIAL_SUFFIX = ".partial"  # <out>.partial/ beside the dataset: kept episodes (.npz) and attempts.jsonl


class _DemoCache:
    """Successful episodes as .npz files and every attempt as a line of attempts.jsonl."""

    def __init__(self, root: Path, config: dict[str, Any]):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "config.json"
        if config_path.exists() and json.loads(config_path.read_text()) != config:
            raise ValueError(f"{root} holds an unfinished collection with other settings; "
                             "use another --out or delete it")
        config_path.write_text(json.dumps(config, indent=2))
        self.attempts: list[dict[str, Any]] = []
        log = root / "attempts.jsonl"
        if log.exists():
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            self.attempts = [a for a in rows
                             if not a["success"] or self.npz(a["task"], a["episode"]).exists()]

    def npz(self, task: str, episode: int) -> Path:
        return self.root / task / f"episode_{episode:06d}.npz"

    def kept(self, task: str) -> list[int]:
        return sorted(a["episode"] for a in self.attempts if a["task"] == task and a["success"])

    def tried(self, task: str) -> int:
        return 1 + max((a["episode"] for a in self.attempts if a["task"] == task), default=-1)

    def failures(self, task: str) -> int:
        return sum(1 for a in self.attempts if a["task"] == task and not a["success"])

    def add(self, result: EpisodeResult) -> None:
        spec = result.spec
        if result.success:
            path = self.npz(spec.task, spec.episode)
            path.parent.mkdir(parents=True, exist_ok=True)
            n = len(result.actions)
            tmp = path.with_suffix(".tmp.npz")  # written whole, then renamed: a stop mid-write leaves no .npz
            extras = {_npz_key(cam): np.stack(frames[:n]) for cam, frames in result.extra_frames.items()}
            np.savez_compressed(tmp, images=np.stack(result.frames[:n]), states=np.stack(result.states[:n]),
                                actions=np.stack(result.actions), seed=spec.seed, **extras)
            os.replace(tmp, path)
        attempt = {"task": spec.task, "episode": spec.episode, "seed": spec.seed, "success": result.success,
                   "steps": result.steps, "error": result.error}
        self.attempts.append(attempt)
        with (self.root / "attempts.jsonl").open("a") as f:
            f.write(json.dumps(attempt) + "\n")


def _npz_key(camera: str) -> str:
    """The cache's array of an extra camera's frames (the primary camera's are ``images``)."""
    return f"images_{camera}"


def _write_dataset(out: Path, cache: _DemoCache, tasks: list[str], episodes_per_task: int, name: str,
                   image_format: str, extra_cameras: tuple[str, ...] = ()) -> int:
    """Write the first `episodes_per_task` kept episodes of each task with LeRobotWriter: camera ``image`` (the
    primary) and each extra camera by its name."""
    from openvla.data.lerobot import LeRobotWriter

    index = 0
    with LeRobotWriter(out, fps=mw.FPS, image_format=image_format, robot_type="sawyer", name=name) as writer:
        for task in tasks:
            for episode in cache.kept(task)[:episodes_per_task]:
                with np.load(cache.npz(task, episode)) as z:
                    images = {"image": z["images"], **{cam: z[_npz_key(cam)] for cam in extra_cameras}}
                    writer.add_episode(Episode(images=images, actions=z["actions"],
                                               instruction=mw.INSTRUCTIONS[task], states=z["states"],
                                               episode_index=index, dataset_name=name))
                index += 1
    return index


def collect_metaworld(tasks: str | list[str] = "mt10", episodes_per_task: int = 50,
                      out: str | Path = "metaworld_demos", workers: int = 2, seed: int = 0,
                      image_size: int = mw.DEFAULT_IMAGE_SIZE, camera: str = mw.DEFAULT_CAMERA,
                      max_steps: int = mw.MAX_STEPS, max_attempts: int | None = None,
                      image_format: str = "png", progress: bool = True,
                      extra_cameras: list[str] | tuple[str, ...] = ()) -> Path:
    """Collect `episodes_per_task` successful expert episodes per task into a LeRobot dataset at `out`.

    Failed episodes are counted and dropped; episode seeds are ``episode_seed("demo", seed, task, i)``,
    disjoint from evaluation seeds. Kept episodes are cached in ``<out>.partial/`` as they finish, so an
    interrupted run resumes where it stopped; the cache is removed once the dataset is written. Each task
    gets at most `max_attempts` tries (default 2 * episodes_per_task + 10). `extra_cameras` (Meta-World
    camera names, e.g. corner, topview) are recorded too, each as a camera of that name beside ``image``.
    """
    task_list = mw.resolve_tasks(tasks)
    extra_cameras = mw.check_cameras(camera, extra_cameras)
    out = Path(out)
    max_attempts = max_attempts or 2 * episodes_per_task + 10
    config = {"tasks": task_list, "seed": seed, "image_size": image_size, "camera": camera,
              "max_steps": max_steps}
    if extra_cameras:  # only then, so single-camera caches and datasets stay as they were
        config["extra_cameras"] = list(extra_cameras)
    info_path = out / "collect_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if ({k: info.get(k) for k in config} == config and info.get("episodes_per_task") == episodes_per_task
                and info.get("extra_cameras", []) == list(extra_cameras)):
            return out  # already collected with these settings
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another --out")
    cache = _DemoCache(out.with_name(out.name + PARTIAL_SUFFIX), config)
    name = f"metaworld_{tasks if isinstance(tasks, str) else 'custom'}".replace(",", "_")
    start = time.perf_counter()
    factory = partial(mw.make_env, image_size=image_size, camera=camera, max_steps=max_steps,
                      extra_cameras=extra_cameras)
    done = sum(min(len(cache.kept(t)), episodes_per_task) for t in task_list)
    with tqdm(total=episodes_per_task * len(task_list), initial=done, desc="collect metaworld", unit="ep",
              disable=not progress, dynamic_ncols=True) as bar, EnvPool(factory, workers) as pool:
        while True:  # rounds: each asks for the shortfall of every task, until none is left or tries run out
            specs = [EpisodeSpec(task, i, mw.episode_seed("demo", seed, task, i), max_steps, record=True)
                     for task in task_list
                     for i in range(cache.tried(task), min(max_attempts, cache.tried(task)
                                                           + episodes_per_task - len(cache.kept(task))))]
            if not specs:
                break
            for result in run_episodes(ExpertPolicy(), specs, pool, mw.ACTION_DIM):
                cache.add(result)
                if result.success and len(cache.kept(result.spec.task)) <= episodes_per_task:
                    bar.update()
                bar.set_postfix_str(f"failed {sum(not a['success'] for a in cache.attempts)}", refresh=False)
    seconds = time.perf_counter() - start
    summary = {**config, "episodes_per_task": episodes_per_task, "seed_split": "demo", "fps": mw.FPS,
               "per_task": {t: {"kept": min(len(cache.kept(t)), episodes_per_task),
                                "failed": cache.failures(t)} for t in task_list},
               "collect_s_this_run": round(seconds, 1)}
    short = {t: s["kept"] for t, s in summary["per_task"].items() if s["kept"] < episodes_per_task}
    if short:
        print(f"warning: fewer than {episodes_per_task} successful episodes after {max_attempts} tries: "
              f"{short}")
    summary["episodes"] = _write_dataset(out, cache, task_list, episodes_per_task, name, image_format,
                                         extra_cameras)
    info_path.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(cache.root)
    return out
