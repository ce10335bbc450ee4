"""`openvla demo`: the main job end to end on a CPU, from scripted demonstrations to a judged policy.

1. collect scripted-expert demonstrations for a few Meta-World tasks (cached: a second run skips it);
2. train the small preset from scratch on them (language-conditioned, OFT-style action chunks);
3. evaluate it closed loop on held-out seeds, with videos;
4. write a report folder: eval_info.json, learning curves, success per task, videos, REPORT.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

# Two pairs of tasks that share a scene (open vs close), so the instruction must steer the policy.
DEMO_TASKS = ["drawer-open-v3", "drawer-close-v3", "window-open-v3", "window-close-v3"]


@dataclass
class DemoConfig:
    """What the demo runs; the defaults fit in 20 minutes on a 2-core CPU."""

    tasks: list[str] = field(default_factory=lambda: list(DEMO_TASKS))
    episodes_per_task: int = 25
    image_size: int = 96
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 7  # training: model initialisation and batch order (TrainConfig's default)
    eval_episodes_per_task: int = 10
    eval_seed: int = 1
    num_envs: int = 2
    workers: int = 2
    model: dict = field(default_factory=lambda: {
        "action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="collect demos, train a VLA from scratch, evaluate it: all on this CPU")
    p.add_argument("--out", default="demo_out", help="folder for demonstrations, the run and the report")
    p.add_argument("--steps", type=int, default=DemoConfig.steps, help="training steps")
    p.add_argument("--episodes-per-task", type=int, default=DemoConfig.episodes_per_task)
    p.add_argument("--eval-episodes-per-task", type=int, default=DemoConfig.eval_episodes_per_task)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(steps=args.steps, episodes_per_task=args.episodes_per_task,
                     eval_episodes_per_task=args.eval_episodes_per_task)
    run_demo(cfg, Path(args.out))
    return 0


def run_demo(cfg: DemoConfig, out: Path) -> dict:
    """Collect, train, evaluate and report; returns the evaluation's eval_info."""
    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate

    timings = {}
    t0 = time.perf_counter()
    demos = collect_demos(cfg, out)
    timings["collect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    final = train_policy(cfg, demos, out / "run")
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    print(f"[3/3] closed-loop evaluation: {cfg.eval_episodes_per_task} held-out episodes per task")
    policy = VLAPolicy.from_pretrained(final)
    info = evaluate(policy, env="metaworld", tasks=cfg.tasks, episodes_per_task=cfg.eval_episodes_per_task,
                    seed=cfg.eval_seed, out_dir=out / "eval", num_envs=cfg.num_envs,
                    open_loop_steps=policy.vla.config.action_chunk, video_episodes=1,
                    image_size=cfg.image_size)
    timings["eval_s"] = time.perf_counter() - t0
    write_report(out, cfg, info, timings)
    return info


def collect_demos(cfg: DemoConfig, out: Path) -> Path:
    """Scripted-expert demonstrations in ``out/demos`` (a finished collection is reused)."""
    from openvla.sim.collect import collect_metaworld

    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] scripted demonstrations: {cfg.episodes_per_task} per task for {', '.join(cfg.tasks)}")
    return collect_metaworld(cfg.tasks, cfg.episodes_per_task, out / "demos", workers=cfg.workers,
                             image_size=cfg.image_size)


def train_policy(cfg: DemoConfig, demos: Path, run_dir: Path) -> Path:
    """Train the small preset from scratch with the demo's recipe; a finished run is reused."""
    from openvla.train.config import TrainConfig
    from openvla.train.trainer import train

    print(f"[2/3] training the small preset from scratch for {cfg.steps} steps")
    if (run_dir / "final" / "vla_config.json").exists() and _finished(run_dir, cfg.steps):
        return run_dir / "final"
    return train(TrainConfig(preset="small", model=dict(cfg.model), data=[str(demos)], out=str(run_dir),
                             max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, schedule="cosine", seed=cfg.seed,
                             warmup_steps=min(100, cfg.steps // 10), weight_decay=0.01,
                             num_workers=1, save_every=max(100, cfg.steps // 4), log_every=10))


def _finished(run_dir: Path, steps: int) -> bool:
    cfg_path = run_dir / "train_config.json"
    return cfg_path.exists() and json.loads(cfg_path.read_text()).get("max_steps") == steps


def describe_model(overrides: dict) -> str:
    """The action side of a model in words, from its config overrides."""
    chunk = overrides.get("action_chunk", 1)
    parts = [f"action chunks of {chunk}" if chunk > 1 else "single-step actions",
             "parallel decoding" if overrides.get("parallel_decoding") else "autoregressive decoding",
             "L1 head" if overrides.get("action_head") == "l1" else "discrete action tokens"]
    return ", ".join(parts + (["proprio"] if overrides.get("proprio_dim") else []))


def write_report(out: Path, cfg: DemoConfig, info: dict, timings: dict) -> Path:
    """REPORT.md with the protocol, the numbers and links to the plots and videos; print the summary."""
    report = out / "report"
    report.mkdir(exist_ok=True)
    for src, name in ((out / "run" / "curves.png", "learning_curves.png"),
                      (out / "eval" / "success.png", "success_per_task.png"),
                      (out / "eval" / "eval_info.json", "eval_info.json")):
        if src.exists():
            shutil.copy(src, report / name)
    videos = sorted((out / "eval" / "videos").glob("*/*.mp4"))
    per_task = info.get("per_task", [])
    lines = [
        "# openvla demo report", "",
        f"Protocol: Meta-World v3, tasks {', '.join(cfg.tasks)}; {cfg.episodes_per_task} scripted-expert demos "
        f"per task (seeds of the 'demo' split); the `small` preset trained from scratch for {cfg.steps} steps "
        f"(batch {cfg.batch_size}, {describe_model(cfg.model)}); "
        f"{cfg.eval_episodes_per_task} closed-loop episodes per task on held-out seeds ('eval' split, seed "
        f"{cfg.eval_seed}), corner2 camera at {cfg.image_size}px, success = info['success'] at any step, "
        "at most 500 steps.", "",
        f"**Overall success: {info['overall']['pc_success']:.1f}%** over {info['overall']['n_episodes']} episodes.",
        "", "| task | success % | episodes |", "| --- | ---: | ---: |",
    ]
    for row in per_task:
        lines.append(f"| {row['task']} | {row['metrics']['pc_success']:.1f} | {row['metrics']['n_episodes']} |")
    lines += ["", "Time: " + ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in timings.items()), "",
              "![learning curves](learning_curves.png)", "", "![success per task](success_per_task.png)", "",
              "Videos: " + ", ".join(f"[{v.parent.name}](../eval/videos/{v.parent.name}/{v.name})" for v in videos)]
    path = report / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:5 + len(per_task) + 4]))
    print(f"\nreport: {path}")
    return path
