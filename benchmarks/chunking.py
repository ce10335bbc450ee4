"""Action chunking on Meta-World: the demo's chunked OFT model beside single-step models, same demonstrations.

    python benchmarks/chunking.py --out runs/chunking
    python benchmarks/chunking.py --out runs/chunking --demos demo_out/demos --variants single-ar chunk1-l1

Every variant runs `openvla demo`'s recipe (tasks, 25 demos per task, small preset from scratch, steps, batch,
learning rate, 10 held-out episodes per task) and differs only in the model overrides below. A chunked policy
executes its whole chunk open loop before asking again. Each variant resumes when re-run with the same --out.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from openvla.demo import DemoConfig, run_demo

VARIANTS = {
    "chunk8-l1": ("chunk 8, parallel decoding, L1 head (the demo)",
                  {"action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1}),
    "chunk1-l1": ("single step, parallel decoding, L1 head",
                  {"action_chunk": 1, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1}),
    "single-ar": ("single step, autoregressive action tokens (OpenVLA)",
                  {"action_chunk": 1, "parallel_decoding": False, "action_head": "tokens", "proprio_dim": -1}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/chunking")
    ap.add_argument("--demos", default=None, help="reuse a demo's demonstrations folder (same tasks and size)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=DemoConfig.steps)
    args = ap.parse_args()
    out = Path(args.out)
    shared = Path(args.demos).resolve() if args.demos else out / "demos"
    rows = []
    for name in args.variants:
        label, model = VARIANTS[name]
        variant_dir = out / name
        variant_dir.mkdir(parents=True, exist_ok=True)
        if not (variant_dir / "demos").exists():
            shared.mkdir(parents=True, exist_ok=True)
            (variant_dir / "demos").symlink_to(shared.resolve(), target_is_directory=True)
        rows.append((label, run_demo(replace(DemoConfig(), model=model, steps=args.steps), variant_dir)))
    cfg = DemoConfig()
    print(f"\nProtocol: `openvla demo` recipe: {', '.join(cfg.tasks)}; {cfg.episodes_per_task} demos/task; small "
          f"preset from scratch, {args.steps} steps x batch {cfg.batch_size}; {cfg.eval_episodes_per_task} "
          f"held-out episodes per task (seed {cfg.eval_seed}).")
    tasks = [t["task"] for t in rows[0][1]["per_task"]]
    print("| model | " + " | ".join(tasks) + " | overall | s per episode |")
    print("| --- | " + " | ".join("---:" for _ in tasks) + " | ---: | ---: |")
    for label, info in rows:
        cells = " | ".join(f"{t['metrics']['pc_success']:.0f}%" for t in info["per_task"])
        print(f"| {label} | {cells} | {info['overall']['pc_success']:.1f}% | {info['overall']['eval_ep_s']:.2f} |")


if __name__ == "__main__":
    main()
