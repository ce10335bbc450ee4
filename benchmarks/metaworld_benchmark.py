"""Meta-World benchmark: collect K expert demos per task, train our model from scratch, evaluate closed loop.

    python benchmarks/metaworld_benchmark.py --tasks mt10 --demos 50 --steps 20000 --out runs/bench_mt10
    python benchmarks/metaworld_benchmark.py --tasks mt50 --demos 50 --steps 60000 --out runs/bench_mt50

Protocol (printed with the table): Meta-World v3, corner2 camera, object positions randomised per seed,
K scripted-expert demos per task on the 'demo' seed split, one multi-task language-conditioned policy,
10 episodes per task on the held-out 'eval' split, success = info["success"] at any step within 500 steps.
The published rows (SmolVLA paper, Table 2; 50 demos per task, 10 trials per task) are printed beside ours;
they were not run here. Each stage resumes when re-run with the same --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PUBLISHED = [  # MT50, from ../shared/LANDSCAPE.md (SmolVLA paper Table 2, secondary copies)
    ("Diffusion Policy", 23.1, 10.7, 1.9, 6.1, 10.5),
    ("TinyVLA", 77.6, 21.5, 11.4, 15.8, 31.6),
    ("pi0 (3.5B)", 71.8, 48.2, 41.7, 30.0, 47.9),
    ("SmolVLA (0.45B)", 82.5, 41.8, 45.0, 60.0, 57.3),
    ("SmolVLA (2.25B)", 87.14, 51.82, 70.0, 64.0, 68.24),
]
GROUPS = ("easy", "medium", "hard", "very_hard")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mt10")
    ap.add_argument("--demos", type=int, default=50, help="expert demonstrations per task")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--episodes", type=int, default=10, help="evaluation episodes per task")
    ap.add_argument("--seed", type=int, default=1, help="evaluation seed (the 'eval' split)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--demos-dir", default=None, help="reuse demonstrations collected elsewhere")
    ap.add_argument("--out", default="runs/bench_metaworld")
    args = ap.parse_args()

    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate
    from openvla.sim.collect import collect_metaworld
    from openvla.train.config import TrainConfig
    from openvla.train.trainer import train

    out = Path(args.out)
    demos = Path(args.demos_dir) if args.demos_dir else collect_metaworld(
        args.tasks, args.demos, out / "demos", workers=args.workers, image_size=args.image_size)
    final = train(TrainConfig(
        preset="small", model={"action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1},
        data=[str(demos)], out=str(out / "run"), max_steps=args.steps, batch_size=args.batch, lr=args.lr,
        schedule="cosine", warmup_steps=min(500, args.steps // 10), weight_decay=0.01, num_workers=args.workers,
        save_every=max(500, args.steps // 10)))
    policy = VLAPolicy.from_pretrained(final)
    info = evaluate(policy, env="metaworld", tasks=args.tasks, episodes_per_task=args.episodes, seed=args.seed,
                    out_dir=out / "eval", num_envs=args.workers, open_loop_steps=policy.vla.config.action_chunk,
                    image_size=args.image_size)
    groups = {g: info["per_group"].get(g, {}).get("pc_success") for g in GROUPS}
    print(f"\nProtocol: Meta-World v3 {args.tasks}, {args.demos} demos/task, {args.episodes} eval episodes/task "
          f"(seed {args.seed}, held-out split), corner2 {args.image_size}px, <=500 steps; small preset from "
          f"scratch, {args.steps} steps x batch {args.batch}.")
    print("| method | easy | medium | hard | very hard | average |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    cells = " | ".join("-" if v is None else f"{v:.1f}" for v in groups.values())
    print(f"| ours, {args.tasks} (measured) | {cells} | {info['overall']['pc_success']:.1f} |")
    for name, *vals in PUBLISHED:
        print(f"| {name}, MT50 (published) | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    print("\nper task:")
    for row in info["per_task"]:
        print(f"  {row['task']:<32} {row['metrics']['pc_success']:5.1f}%")
    (out / "benchmark.json").write_text(json.dumps({"args": vars(args), "groups": groups,
                                                    "overall": info["overall"]["pc_success"]}, indent=2))


if __name__ == "__main__":
    main()
