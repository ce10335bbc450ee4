"""Action chunking on Meta-World: the demo's chunked OFT model beside single-step models, same demonstrations.

    python benchmarks/chunking.py --out runs/chunking
    python benchmarks/chunking.py --out runs/chunking --demos demo_out/demos --episodes 30 --open-loop 8 1 \
        --temporal-ensemble 0.01

Every variant is trained with `openvla demo`'s recipe (tasks, 25 demos per task, small preset from scratch,
steps, batch, learning rate) and differs only in the model overrides below. Each is evaluated on the demo's
held-out seeds (--episodes per task, seed 1); a chunked model is evaluated once per --open-loop value: the
number of actions of each chunk executed before the policy is asked again (8 = the whole chunk, as OFT does;
1 = re-plan every step), and once per --temporal-ensemble decay (asked every step, the executed action is the
weighted mean of every chunk's prediction for it, as ACT does). Training and evaluations resume when re-run
with the same --out.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from openvla.demo import DemoConfig, collect_demos, train_policy

VARIANTS = {
    "chunk8-l1": ("chunk 8, parallel decoding, L1 head (the demo)",
                  {"action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1}),
    "chunk8-l1-queries": ("chunk 8, parallel decoding, L1 head, learned slot queries",
                          {"action_chunk": 8, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1,
                           "action_queries": "learned"}),
    "chunk8-diffusion": ("chunk 8, parallel decoding, diffusion head (50 DDIM passes)",
                         {"action_chunk": 8, "parallel_decoding": True, "action_head": "diffusion",
                          "proprio_dim": -1}),
    "chunk4-l1": ("chunk 4, parallel decoding, L1 head",
                  {"action_chunk": 4, "parallel_decoding": True, "action_head": "l1", "proprio_dim": -1}),
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[DemoConfig.seed],
                    help="training seeds: each variant is trained once per seed (training varies a lot by seed)")
    ap.add_argument("--episodes", type=int, default=DemoConfig.eval_episodes_per_task, help="per task")
    ap.add_argument("--open-loop", type=int, nargs="+", default=[8], help="actions executed per chunk")
    ap.add_argument("--temporal-ensemble", type=float, nargs="*", default=[], metavar="DECAY",
                    help="also evaluate chunked models with ACT's temporal ensembling at these decays")
    args = ap.parse_args()

    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate

    out = Path(args.out)
    cfg = DemoConfig(steps=args.steps)
    demos = Path(args.demos) if args.demos else collect_demos(cfg, out)
    rows = []
    for name, seed in ((n, s) for n in args.variants for s in args.seeds):
        label, model = VARIANTS[name]
        folder = out / name if seed == DemoConfig.seed else out / name / f"seed{seed}"
        final = train_policy(replace(cfg, model=model, seed=seed), demos, folder / "run")
        policy = VLAPolicy.from_pretrained(final)
        chunk = policy.vla.config.action_chunk
        settings = [(str(k), f"open{k}", {"open_loop_steps": k})
                    for k in sorted({min(k, chunk) for k in args.open_loop}, reverse=True)]
        settings += [(f"1, ensemble {d}", f"ensemble{d}", {"temporal_ensemble": d})
                     for d in (args.temporal_ensemble if chunk > 1 else [])]
        for shown, how_name, how in settings:
            info = evaluate(policy, env="metaworld", tasks=cfg.tasks, episodes_per_task=args.episodes,
                            seed=cfg.eval_seed, out_dir=folder / f"eval_{args.episodes}x_{how_name}",
                            num_envs=cfg.num_envs, video_episodes=0, image_size=cfg.image_size, **how)
            rows.append((label, seed, shown, info))
    print(f"\nProtocol: `openvla demo` recipe: {', '.join(cfg.tasks)}; {cfg.episodes_per_task} demos/task; small "
          f"preset from scratch, {args.steps} steps x batch {cfg.batch_size}; {args.episodes} held-out episodes "
          f"per task (seed {cfg.eval_seed}, 'eval' split), at most 500 steps.")
    tasks = [t["task"] for t in rows[0][3]["per_task"]]
    print("| model | training seed | actions per call | " + " | ".join(tasks) + " | overall | s per episode |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in tasks) + " | ---: | ---: |")
    for label, seed, k, info in rows:
        cells = " | ".join(f"{t['metrics']['pc_success']:.0f}%" for t in info["per_task"])
        print(f"| {label} | {seed} | {k} | {cells} | {info['overall']['pc_success']:.1f}% | "
              f"{info['overall']['eval_ep_s']:.2f} |")
    if len(args.seeds) > 1:
        print("\nMean over training seeds:")
        for label, k in dict.fromkeys((label, k) for label, _, k, _ in rows):
            vals = [info["overall"]["pc_success"] for lb, _, kk, info in rows if (lb, kk) == (label, k)]
            print(f"| {label} | {k} | {np.mean(vals):.1f}% +- {np.std(vals):.1f} ({len(vals)} seeds) |")


if __name__ == "__main__":
    main()
