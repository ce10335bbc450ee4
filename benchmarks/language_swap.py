"""Does the instruction steer the policy? Evaluate a trained checkpoint with each task's instruction swapped
for its partner's in the same scene (open <-> close), beside the correct instruction.

    python benchmarks/language_swap.py --policy demo_out/run/final --image-size 96

If the policy reads the language, success on the env's own task collapses when told the opposite.
"""

from __future__ import annotations

import argparse

from openvla.sim.policies import InstructionSwap

PAIRS = {"drawer-open-v3": "drawer-close-v3", "drawer-close-v3": "drawer-open-v3",
         "window-open-v3": "window-close-v3", "window-close-v3": "window-open-v3"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=96)
    args = ap.parse_args()
    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate
    from openvla.sim.metaworld import INSTRUCTIONS

    policy = VLAPolicy.from_pretrained(args.policy)
    kw = dict(env="metaworld", tasks=list(PAIRS), episodes_per_task=args.episodes, seed=args.seed, num_envs=2,
              open_loop_steps=policy.vla.config.action_chunk, image_size=args.image_size, progress=False)
    right = evaluate(policy, **kw)
    swapped = evaluate(InstructionSwap(policy, {task: INSTRUCTIONS[PAIRS[task]] for task in PAIRS}), **kw)
    print(f"\n{args.episodes} held-out episodes per task (seed {args.seed}); success on the env's own task")
    print("| scene's task | told its own instruction | told the opposite one |")
    print("| --- | ---: | ---: |")
    for a, b in zip(right["per_task"], swapped["per_task"], strict=True):
        print(f"| {a['task']} | {a['metrics']['pc_success']:.0f}% | {b['metrics']['pc_success']:.0f}% |")
    print(f"| overall | {right['overall']['pc_success']:.1f}% | {swapped['overall']['pc_success']:.1f}% |")


if __name__ == "__main__":
    main()
