"""Action heads on one backbone: tokens (OpenVLA), L1 (OFT), diffusion (OFT), flow matching (pi0), FAST (pi0-FAST).

    python benchmarks/heads.py --out runs/heads                               # the full protocol
    python benchmarks/heads.py --out runs/heads --steps 20 --episodes 1 --seeds 7 --heads fast   # a smoke run

Every head is trained with `openvla demo`'s recipe (its four Meta-World tasks, 25 scripted demos per task, the small
preset from scratch, steps, batch, learning rate, proprio) and the same action chunk of 8, and differs only in
its head below. Each is evaluated closed loop on the demo's held-out seeds (--episodes per task, seed 1), executing
whole chunks. Reported per head: success (mean and standard deviation over training seeds), actions/s at batch 1
and 8 (the chunk's actions per second of `predict_observations` on dataset frames, after a warm-up), training
samples/s (the median of the run's logged samples_per_s), and LLM passes per chunk (FAST: measured while
evaluating; its tokenizer is trained by `openvla train` on the demos over n_action_bins=512 reserved ids, at the
coarsest scale whose mean round-trip error is within the 256-bin tokenizer's).
Runs resume when re-run with the same --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from openvla.config import get_preset
from openvla.demo import DemoConfig, collect_demos, train_policy

COMMON = {"action_chunk": 8, "proprio_dim": -1}
HEADS = {
    "tokens": ("tokens: 256 bins, autoregressive (OpenVLA)", {"action_head": "tokens", "parallel_decoding": False}),
    "l1": ("L1 regression, one parallel pass (OFT)", {"action_head": "l1", "parallel_decoding": True}),
    "diffusion": ("diffusion, 50 DDIM passes (OFT)", {"action_head": "diffusion", "parallel_decoding": True}),
    "flow": ("flow matching, 10 Euler passes (pi0)", {"action_head": "flow", "parallel_decoding": True}),
    "fast": ("FAST tokens, 512 ids, autoregressive to EOS (pi0-FAST)",
             {"action_head": "fast", "parallel_decoding": False, "n_action_bins": 512}),
    # 3072 action ids (the small preset's 1024 text ids kept) hold the scale whose round trip is within half a bin
    # on every value of the demos (320); its tokenizer is fitted with `openvla fast-tokenizer --match-bins max`
    "fast-max": ("FAST tokens, 3072 ids, scale 320 (every value within half a bin)",
                 {"action_head": "fast", "parallel_decoding": False, "n_action_bins": 3072,
                  "llm": {**get_preset("small").llm, "vocab_size": 1024 + 3072 + 64}, "fast_tokenizer": "max"}),
    "fast-256": ("FAST tokens on OpenVLA's 256 action ids (coarser scale)",
                 {"action_head": "fast", "parallel_decoding": False}),
}


def fixed_passes(config) -> float | None:
    """LLM passes per chunk of the heads whose count is fixed."""
    return {"tokens": config.action_slots, "l1": 1, "diffusion": config.diffusion_steps,
            "flow": config.flow_steps}.get(config.action_head)


def fast_tokenizer_within_every_bin(demos: Path, model: dict) -> dict:
    """`openvla fast-tokenizer --match-bins max` on the demos, over the model's reserved ids."""
    from openvla.train import fast

    chunks = fast.chunks_of([str(demos)], model["action_chunk"])
    return fast.fit(chunks, model["n_action_bins"], match="max").to_dict()


def actions_per_second(vla, demos: Path, batch: int, repeats: int) -> float:
    """Actions (chunk steps) per second of ``predict_observations`` over ``batch`` dataset frames."""
    from openvla.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(demos)
    frames = np.linspace(0, ds.num_frames - 1, batch).astype(int)
    observations = [{"images": {c: ds.image(c, int(f)) for c in vla.config.cameras},
                     "instruction": ds.instruction(int(f)), "state": ds.states[int(f)]} for f in frames]
    vla.predict_observations(observations)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        vla.predict_observations(observations)
    return batch * vla.config.action_chunk * repeats / (time.perf_counter() - t0)


def training_samples_per_second(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(np.median([r["samples_per_s"] for r in rows[1:] or rows if "samples_per_s" in r]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/heads")
    ap.add_argument("--demos", default=None, help="reuse a demo's demonstrations folder (same tasks and size)")
    ap.add_argument("--heads", nargs="+", default=[h for h in HEADS if h not in ("fast-256", "fast-max")], choices=list(HEADS))
    ap.add_argument("--steps", type=int, default=DemoConfig.steps)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9], help="training seeds")
    ap.add_argument("--episodes", type=int, default=DemoConfig.eval_episodes_per_task, help="per task")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
    args = ap.parse_args()

    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate

    out = Path(args.out)
    cfg = DemoConfig(steps=args.steps)
    demos = Path(args.demos) if args.demos else collect_demos(cfg, out)
    rows = []
    for name in args.heads:
        label, head = HEADS[name]
        results = []
        for seed in args.seeds:
            folder = out / name / f"seed{seed}"
            done = folder / f"result_{args.episodes}x.json"
            if done.exists():  # a finished seed (its pass counts were measured while it evaluated)
                results.append(json.loads(done.read_text()))
                continue
            model = {**COMMON, **head}
            if model.get("fast_tokenizer") == "max":
                model["fast_tokenizer"] = fast_tokenizer_within_every_bin(demos, model)
            final = train_policy(replace(cfg, model=model, seed=seed), demos, folder / "run")
            policy = VLAPolicy.from_pretrained(final)
            vla = policy.vla
            info = evaluate(policy, env="metaworld", tasks=cfg.tasks, episodes_per_task=args.episodes,
                            seed=cfg.eval_seed, out_dir=folder / f"eval_{args.episodes}x", num_envs=cfg.num_envs,
                            video_episodes=0, image_size=cfg.image_size, open_loop_steps=vla.config.action_chunk)
            h = vla.action_head
            passes = fixed_passes(vla.config)
            if passes is None and getattr(h, "calls", 0):
                passes = h.passes / h.calls
            results.append({"seed": seed, "success": info["overall"]["pc_success"],
                            "per_task": {t["task"]: t["metrics"]["pc_success"] for t in info["per_task"]},
                            "passes_per_chunk": passes, "malformed": getattr(h, "malformed", None),
                            "repaired": getattr(h, "repaired", None), "decoded": getattr(h, "decoded", None),
                            "fast_tokens_per_chunk": h.tokens / h.decoded if getattr(h, "decoded", 0) else None,
                            "train_samples_per_s": training_samples_per_second(folder / "run"),
                            "actions_per_s_b1": actions_per_second(vla, demos, 1, args.repeats),
                            "actions_per_s_b8": actions_per_second(vla, demos, 8, args.repeats)})
            done.write_text(json.dumps(results[-1]))
            print(json.dumps({"head": name, **results[-1]}))
        rows.append((name, label, results))
    (out / "heads.json").write_text(json.dumps({n: r for n, _, r in rows}, indent=2))

    print(f"\nProtocol: `openvla demo` recipe: {', '.join(cfg.tasks)}; {cfg.episodes_per_task} demos/task; small "
          f"preset from scratch, chunk 8, proprio, {args.steps} steps x batch {cfg.batch_size}, training seeds "
          f"{args.seeds}; {args.episodes} held-out episodes per task (seed {cfg.eval_seed}), whole chunks executed.")
    print("| head | success % (mean +- std over seeds) | per seed | actions/s b=1 | actions/s b=8 | "
          "train samples/s | LLM passes per chunk (per action) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for _, label, results in rows:
        success = [r["success"] for r in results]
        passes = np.mean([r["passes_per_chunk"] for r in results])
        print(f"| {label} | {np.mean(success):.1f} +- {np.std(success):.1f} | "
              f"{', '.join(f'{s:.0f}' for s in success)} | {np.mean([r['actions_per_s_b1'] for r in results]):.1f} | "
              f"{np.mean([r['actions_per_s_b8'] for r in results]):.1f} | "
              f"{np.mean([r['train_samples_per_s'] for r in results]):.1f} | {passes:.1f} ({passes / 8:.2f}) |")


if __name__ == "__main__":
    main()
