"""`openvla experiment`: OpenVLA's experiments in miniature on Meta-World's ML45 split, one stage per command.

1. ``collect``: scripted demonstrations of the 45 train tasks, and of the 5 held-out test tasks at each demo count;
2. ``pretrain``: one generalist on the 45 tasks, saved as a release (weights, config, processor, statistics, card);
3. ``evaluate``: the generalist closed loop on held-out seeds of its 45 tasks, per task and per group;
4. ``adapt``: the 5 unseen tasks from few demos: from scratch vs the generalist with each fine-tuning mode, the
   same steps and evaluation for all, several training seeds (success, trainable %, peak memory, time);
5. ``language``: the generalist in one task's scene told its own instruction and its partner task's;
6. ``report``: REPORT.md with the tables and the success-vs-demos plot.

Every stage reuses what a previous call finished (collections, runs, evaluated episodes), so a killed run
continues where it stopped; ``all`` runs the six in order. ``adapt`` in several shells shares its runs (one per
core; a run's folder is claimed by the process training it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openvla.sim import metaworld as mw

ML45_TEST = ("bin-picking-v3", "box-close-v3", "door-lock-v3", "door-unlock-v3", "hand-insert-v3")
ML45_TRAIN = tuple(t for t in mw.TASKS if t not in ML45_TEST)
ROWS = ("scratch", "full", "lora", "frozen-vision", "last-layer", "sandwich")  # scratch, then the training modes
LANGUAGE_PAIRS = (("drawer-open-v3", "drawer-close-v3"), ("window-open-v3", "window-close-v3"),
                  ("faucet-open-v3", "faucet-close-v3"))
STAGES = ("collect", "pretrain", "evaluate", "adapt", "language", "report")


@dataclass
class ExperimentConfig:
    """The protocol; the defaults are the issue's (45 x 20 demos, 10 episodes, 5 and 20 demos, 3 seeds)."""

    train_tasks: list[str] = field(default_factory=lambda: list(ML45_TRAIN))
    test_tasks: list[str] = field(default_factory=lambda: list(ML45_TEST))
    demos_per_task: int = 20
    adapt_demos: list[int] = field(default_factory=lambda: [5, 20])
    rows: list[str] = field(default_factory=lambda: list(ROWS))
    seeds: list[int] = field(default_factory=lambda: [7, 8, 9])
    image_size: int = 96
    preset: str = "small"
    model: dict[str, Any] = field(default_factory=lambda: {
        "action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1})
    batch_size: int = 32
    pretrain_steps: int = 3000
    pretrain_lr: float = 1e-3
    adapt_steps: int = 400
    adapt_lr: float = 5e-4
    lora_rank: int = 4  # the paper's 32 is 1/128 of Llama-2's width; the small preset is 128 wide
    eval_episodes: int = 10  # per train task, for the generalist
    adapt_eval_episodes: int = 10  # per test task, for every adapted policy
    language_pairs: list[list[str]] = field(default_factory=lambda: [list(p) for p in LANGUAGE_PAIRS])
    language_episodes: int = 10
    eval_seed: int = 1
    max_steps: int | None = None  # episode cap in evaluation (None: Meta-World's 500)
    num_envs: int = 2
    workers: int = 2  # collection processes
    videos: int = 1  # videos per task in the generalist's evaluation

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown experiment config keys {unknown}; valid: "
                             f"{sorted(f.name for f in dataclasses.fields(cls))}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from openvla.train.modes import MODES

        bad = [r for r in self.rows if r != "scratch" and r not in MODES]
        if bad:
            raise ValueError(f"unknown rows {bad}; valid: scratch, {', '.join(MODES)}")
        seen = set(mw.resolve_tasks(self.train_tasks)) & set(mw.resolve_tasks(self.test_tasks))
        if seen:
            raise ValueError(f"test tasks {sorted(seen)} are also pretraining tasks; adaptation needs unseen ones")
        for pair in self.language_pairs:
            mw.resolve_tasks(pair)


def load_config(out: Path, cfg: ExperimentConfig | None) -> ExperimentConfig:
    """The experiment's config: saved in ``out`` on first use; a later call must agree with it (or give none)."""
    path = out / "experiment_config.json"
    if path.exists():
        saved = ExperimentConfig.from_dict(json.loads(path.read_text()))
        if cfg is not None and cfg != saved:
            diff = [f"{k}: {json.dumps(v)} -> {json.dumps(getattr(cfg, k))}"
                    for k, v in dataclasses.asdict(saved).items() if v != getattr(cfg, k)]
            raise ValueError(f"{out} holds an experiment with other settings ({'; '.join(diff)}); "
                             "use another --out or the saved settings")
        return saved
    cfg = cfg or ExperimentConfig()
    cfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return cfg


# ------------------------------------------------------------------------------------------------ stages
def collect(cfg: ExperimentConfig, out: Path) -> dict[str, Path]:
    """The pretraining mixture and one adaptation dataset per demo count (seeds shared: 5 demos are the first 5
    of 20)."""
    from openvla.sim.collect import collect_metaworld

    kw = {"workers": cfg.workers, "image_size": cfg.image_size}
    print(f"[collect] {cfg.demos_per_task} demos x {len(cfg.train_tasks)} pretraining tasks")
    paths = {"pretrain": collect_metaworld(cfg.train_tasks, cfg.demos_per_task, out / "data" / "pretrain", **kw)}
    for k in cfg.adapt_demos:
        print(f"[collect] {k} demos x {len(cfg.test_tasks)} held-out tasks")
        paths[f"adapt-{k}"] = collect_metaworld(cfg.test_tasks, k, out / "data" / f"adapt-{k}", **kw)
    return paths


def pretrain(cfg: ExperimentConfig, out: Path) -> Path:
    """Train the generalist; its final folder is the release (with a model card)."""
    data = collect(cfg, out)["pretrain"]
    from openvla.train.config import TrainConfig

    tc = TrainConfig(preset=cfg.preset, model=dict(cfg.model), data=[str(data)], out=str(out / "pretrain"),
                     max_steps=cfg.pretrain_steps, batch_size=cfg.batch_size, lr=cfg.pretrain_lr, schedule="cosine",
                     warmup_steps=min(100, cfg.pretrain_steps // 10), weight_decay=0.01, num_workers=1,
                     save_every=max(1, min(500, cfg.pretrain_steps // 4)), log_every=max(1, min(10, cfg.pretrain_steps)))
    print(f"[pretrain] the {cfg.preset} preset on {len(cfg.train_tasks)} tasks for {cfg.pretrain_steps} steps")
    run_training(tc)
    write_model_card(cfg, out)
    return Path(tc.out) / "final"


def evaluate_generalist(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """The generalist closed loop on held-out seeds of every pretraining task."""
    final = pretrain(cfg, out)
    print(f"[evaluate] the generalist: {cfg.eval_episodes} held-out episodes x {len(cfg.train_tasks)} tasks")
    info = _evaluate(final, cfg.train_tasks, cfg.eval_episodes, out / "generalist_eval", cfg, videos=cfg.videos)
    write_model_card(cfg, out)
    return info


def adapt(cfg: ExperimentConfig, out: Path) -> list[dict[str, Any]]:
    """Every (demo count, row, seed): train on the held-out tasks' demos, evaluate on their held-out seeds."""
    from openvla.train.config import TrainConfig

    data = collect(cfg, out)
    todo = [(k, row, seed) for row in cfg.rows for k in cfg.adapt_demos for seed in cfg.seeds]  # scratch first
    for i, (k, row, seed) in enumerate(todo, 1):
        folder = out / "adapt" / f"{k}-demos" / row / f"seed{seed}"
        done = folder / "result.json"
        if done.exists() or not claim(folder):  # finished, or another `adapt` process is on it
            continue
        print(f"[adapt {i}/{len(todo)}] {k} demos per task, {row}, seed {seed}")
        common = {"data": [str(data[f"adapt-{k}"])], "out": str(folder / "run"), "max_steps": cfg.adapt_steps,
                  "batch_size": cfg.batch_size, "lr": cfg.adapt_lr, "schedule": "cosine", "seed": seed,
                  "warmup_steps": min(50, cfg.adapt_steps // 10), "weight_decay": 0.01, "num_workers": 1,
                  "save_every": max(1, cfg.adapt_steps // 2), "log_every": max(1, min(10, cfg.adapt_steps))}
        if row == "scratch":
            tc = TrainConfig(preset=cfg.preset, model=dict(cfg.model), **common)
        else:
            tc = TrainConfig(preset=None, checkpoint=str(pretrain(cfg, out)), mode=row, lora_rank=cfg.lora_rank,
                             lora_alpha=min(cfg.lora_rank, 16), **common)
        training = run_training(tc)
        info = _evaluate(Path(tc.out) / "final", cfg.test_tasks, cfg.adapt_eval_episodes, folder / "eval", cfg)
        result = {"demos": k, "row": row, "seed": seed, "success": info["overall"]["pc_success"],
                  "per_task": {t["task"]: t["metrics"]["pc_success"] for t in info["per_task"]}, **training}
        done.write_text(json.dumps(result, indent=2))
    return [json.loads(p.read_text()) for p in sorted((out / "adapt").glob("*/*/*/result.json"))]


def language(cfg: ExperimentConfig, out: Path) -> list[dict[str, Any]]:
    """Each pair's scenes with their own instruction and with the partner's: does the instruction steer?"""
    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate
    from openvla.sim.policies import InstructionSwap

    final = pretrain(cfg, out)
    tasks = [t for pair in cfg.language_pairs for t in mw.resolve_tasks(pair)]
    partner = {}
    for a, b in (mw.resolve_tasks(p) for p in cfg.language_pairs):
        partner[a], partner[b] = b, a
    print(f"[language] {len(tasks)} scenes x {cfg.language_episodes} episodes, told their own and their partner's "
          "instruction")
    policy = VLAPolicy.from_pretrained(final)
    kw = _eval_kwargs(cfg, policy)
    own = evaluate(policy, tasks=tasks, episodes_per_task=cfg.language_episodes,
                   out_dir=out / "language" / "own", video_episodes=0, **kw)
    swapped = evaluate(InstructionSwap(policy, {t: mw.INSTRUCTIONS[partner[t]] for t in tasks}), tasks=tasks,
                       episodes_per_task=cfg.language_episodes, out_dir=out / "language" / "swapped",
                       video_episodes=1, **kw)
    rows = [{"scene": a["task"], "told": partner[a["task"]], "own": a["metrics"]["pc_success"],
             "swapped": b["metrics"]["pc_success"]} for a, b in zip(own["per_task"], swapped["per_task"], strict=True)]
    (out / "language" / "language.json").write_text(json.dumps(rows, indent=2))
    return rows


def report(cfg: ExperimentConfig, out: Path) -> Path:
    """REPORT.md and success_vs_demos.png from whatever stages have finished."""
    from openvla.experiments.tables import write_report

    return write_report(cfg, out)


def run_all(cfg: ExperimentConfig, out: Path) -> Path:
    evaluate_generalist(cfg, out)
    adapt(cfg, out)
    language(cfg, out)
    return report(cfg, out)


# ------------------------------------------------------------------------------------------------ helpers
def run_training(tc: Any) -> dict[str, Any]:
    """`openvla train` in its own process, so its peak memory is its own (the OS's maxrss of that child);
    a finished run is reused. Returns time, peak RSS and trainable parameters, also kept in ``training.json``."""
    run = Path(tc.out)
    record = run / "training.json"

    def finished() -> bool:
        return record.exists() and (run / "final" / "vla_config.json").exists()

    while not finished() and not claim(run):  # another process trains it (the generalist, for a second shell)
        time.sleep(10)
    if finished():
        return json.loads(record.read_text())
    (run / "requested_config.json").write_text(tc.to_json())
    cmd = [sys.executable, "-c", "import sys; from openvla.cli import main; sys.exit(main())",
           "train", "--config", str(run / "requested_config.json")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped here, so Popen must not wait for it again
    if code != 0:
        raise RuntimeError(f"training {run} exited with {code}; its output is above")
    params = json.loads((run / "parameters.json").read_text())
    result = {"train_s": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024,
              "trainable": params["trainable"], "total": params["total"],
              "trainable_pc": 100 * params["trainable"] / params["total"]}
    record.write_text(json.dumps(result, indent=2))
    return result


def claim(folder: Path) -> bool:
    """Take ``folder`` for this process unless a live other process holds it, so several `openvla experiment
    adapt` shells share the work (one per core); a dead holder's claim is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "claimed_by.pid"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(path.read_text() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid == os.getpid():
            return True
        if pid and _alive(pid):
            return False
        path.write_text(str(os.getpid()))
        return True
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _eval_kwargs(cfg: ExperimentConfig, policy: Any) -> dict[str, Any]:
    return {"env": "metaworld", "seed": cfg.eval_seed, "num_envs": cfg.num_envs, "image_size": cfg.image_size,
            "max_steps": cfg.max_steps, "open_loop_steps": policy.vla.config.action_chunk}


def _evaluate(final: Path, tasks: list[str], episodes: int, out_dir: Path, cfg: ExperimentConfig,
              videos: int = 0) -> dict[str, Any]:
    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate

    policy = VLAPolicy.from_pretrained(final)
    return evaluate(policy, tasks=tasks, episodes_per_task=episodes, out_dir=out_dir, video_episodes=videos,
                    **_eval_kwargs(cfg, policy))


def write_model_card(cfg: ExperimentConfig, out: Path) -> Path:
    """README.md beside the generalist's weights: its data, training and (once evaluated) results."""
    from openvla.experiments.tables import model_card

    path = out / "pretrain" / "final" / "README.md"
    path.write_text(model_card(cfg, out))
    return path


# ------------------------------------------------------------------------------------------------ command
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="OpenVLA's experiments in miniature on Meta-World ML45 (see "
                                          "docs/experiments.md)")
    p.add_argument("stage", choices=(*STAGES, "all"))
    p.add_argument("--out", default="runs/ml45", help="the experiment's folder (a rerun continues it)")
    p.add_argument("--config", help="a JSON file of ExperimentConfig fields")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a config field (JSON value)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    given = None
    if args.config or args.set:
        data = json.loads(Path(args.config).read_text()) if args.config else {}
        saved = out / "experiment_config.json"
        if not args.config and saved.exists():
            data = json.loads(saved.read_text())
        for pair in args.set:
            key, _, raw = pair.partition("=")
            try:
                data[key] = json.loads(raw)
            except json.JSONDecodeError:
                data[key] = raw
        given = ExperimentConfig.from_dict(data)
    cfg = load_config(out, given)
    stage = {"collect": collect, "pretrain": pretrain, "evaluate": evaluate_generalist, "adapt": adapt,
             "language": language, "report": report, "all": run_all}[args.stage]
    stage(cfg, out)
    if args.stage not in ("report", "all", "collect"):
        report(cfg, out)
    print(f"report: {out / 'REPORT.md'}")
    return 0
