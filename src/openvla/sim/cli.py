"""`openvla collect metaworld` and `openvla eval`: thin wrappers over collect_metaworld and evaluate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `collect` and `eval` subcommands."""
    collect = sub.add_parser("collect", help="collect scripted demonstrations in simulation")
    sims = collect.add_subparsers(dest="sim", required=True)
    mw = sims.add_parser("metaworld", help="Meta-World scripted experts -> LeRobot dataset")
    mw.add_argument("--tasks", nargs="+", default=["mt10"],
                    help="mt10, mt50, easy, medium, hard, very_hard or task names, "
                    "space- or comma-separated (default mt10)")
    mw.add_argument("--episodes-per-task", type=int, default=50, help="successful episodes kept per task")
    mw.add_argument("--out", required=True, help="dataset directory (re-run the same command to resume)")
    mw.add_argument("--workers", type=int, default=2, help="env worker processes (default 2)")
    mw.add_argument("--seed", type=int, default=0, help="base seed of the demo seed set")
    mw.add_argument("--image-size", type=int, default=128, help="square camera image size (default 128)")
    mw.add_argument("--camera", default="corner2", help="the primary camera, stored as 'image' (default corner2)")
    mw.add_argument("--extra-cameras", nargs="+", default=[], metavar="CAMERA",
                    help="more Meta-World cameras to record, each stored under its own name "
                    "(corner, corner3, corner4, topview, behindGripper, gripperPOV)")
    mw.add_argument("--max-steps", type=int, default=500)
    mw.add_argument("--image-format", choices=("png", "video"), default="png")
    mw.add_argument("--no-progress", action="store_true")
    mw.set_defaults(func=_collect)

    ev = sub.add_parser("eval", help="closed-loop evaluation of a policy in simulation")
    ev.add_argument("--policy", required=True,
                    help="checkpoint directory, http://HOST:PORT, expert or random")
    ev.add_argument("--env", choices=("metaworld", "libero"), default="metaworld")
    ev.add_argument("--tasks", nargs="+", default=None,
                    help="metaworld: mt10 (default), mt50, a group or task names; "
                    "libero: libero_spatial (default), ..., or suite/index; space- or comma-separated")
    ev.add_argument("--episodes-per-task", type=int, default=10)
    ev.add_argument("--seed", type=int, default=0, help="base seed of the evaluation seed set")
    ev.add_argument("--out", required=True, help="output directory (re-run the same command to resume)")
    ev.add_argument("--num-envs", type=int, default=1, help="envs stepped in parallel worker processes")
    ev.add_argument("--max-steps", type=int, default=None, help="episode cap (default: the env's)")
    ev.add_argument("--open-loop-steps", type=int, default=None,
                    help="actions of each chunk executed before asking again (default: the whole chunk)")
    ev.add_argument("--video-episodes", type=int, default=1, help="episodes per task saved as mp4")
    ev.add_argument("--image-size", type=int, default=None, help="camera image size (default: the env's)")
    ev.add_argument("--camera", default=None, help="the primary camera, given as 'image' (default: the env's)")
    ev.add_argument("--extra-cameras", nargs="+", default=None, metavar="CAMERA",
                    help="metaworld: more cameras given to the policy by name (those a model was trained on, "
                    "e.g. corner topview); videos stay of the primary camera")
    ev.add_argument("--render", choices=("fast", "full"), default=None,
                    help="fast: no shadows, reflections, skybox, MSAA (metaworld default); "
                    "full: all effects (libero default)")
    ev.add_argument("--gripper", choices=("openvla", "raw"), default=None,
                    help="libero: map an OpenVLA gripper (1 open, 0 close) to LIBERO's "
                    "(openvla, the default) or pass it through (raw)")
    ev.add_argument("--device", default=None, help="device for a checkpoint policy")
    ev.add_argument("--unnorm-key", default=None, help="action statistics key for a checkpoint policy")
    ev.add_argument("--temporal-ensemble", type=float, default=None, metavar="DECAY",
                    help="ask the policy every step and execute the exp(-DECAY*i)-weighted mean of every chunk's "
                    "prediction for the step (ACT's temporal ensembling; ACT uses 0.01)")
    ev.add_argument("--quantize", choices=("int8", "bnb8", "bnb4"), default=None,
                    help="quantise a checkpoint policy's language model (bnb*: the quant extra)")
    ev.add_argument("--compile", action="store_true",
                    help="run a checkpoint policy through torch.compile (slow first steps, faster after)")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)


def _joined(tasks: list[str] | None) -> str | None:
    """``--tasks a b`` and ``--tasks a,b`` as the one comma-separated spec the task resolvers take."""
    return ",".join(tasks) if tasks else None


def _collect(args: argparse.Namespace) -> int:
    from openvla.sim.collect import collect_metaworld

    out = collect_metaworld(tasks=_joined(args.tasks), episodes_per_task=args.episodes_per_task, out=args.out,
                            workers=args.workers, seed=args.seed, image_size=args.image_size,
                            camera=args.camera, max_steps=args.max_steps, image_format=args.image_format,
                            progress=not args.no_progress, extra_cameras=args.extra_cameras)
    summary = json.loads((Path(out) / "collect_info.json").read_text())
    kept = sum(t["kept"] for t in summary["per_task"].values())
    failed = sum(t["failed"] for t in summary["per_task"].values())
    print(f"{out}: {kept} episodes kept, {failed} failed attempts dropped "
          f"({summary['collect_s_this_run']:.0f} s this run)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from openvla.sim.evaluate import evaluate
    from openvla.threads import set_threads

    set_threads(workers=args.num_envs if args.num_envs > 1 else 0)  # env worker processes get a core each

    tasks = _joined(args.tasks) or {"metaworld": "mt10", "libero": "libero_spatial"}[args.env]
    policy_kwargs = {"device": args.device, "unnorm_key": args.unnorm_key, "compile": args.compile,
                     "quantize": args.quantize}
    if args.env == "libero" and args.unnorm_key is None and Path(args.policy).is_dir():
        from openvla.sim.libero import unnorm_key_for_checkpoint

        policy_kwargs["unnorm_key"] = unnorm_key_for_checkpoint(Path(args.policy), tasks)
    env_kwargs = {}
    if args.render is not None:
        env_kwargs["fast_render"] = args.render == "fast"
    if args.gripper is not None:
        if args.env != "libero":
            raise ValueError("--gripper applies to --env libero only")
        env_kwargs["gripper"] = args.gripper
    evaluate(args.policy, env=args.env, tasks=tasks, episodes_per_task=args.episodes_per_task,
                    seed=args.seed, out_dir=args.out, num_envs=args.num_envs, max_steps=args.max_steps,
                    open_loop_steps=args.open_loop_steps, video_episodes=args.video_episodes,
                    image_size=args.image_size, camera=args.camera, progress=not args.no_progress,
                    policy_kwargs=policy_kwargs, env_kwargs=env_kwargs, temporal_ensemble=args.temporal_ensemble,
                    extra_cameras=args.extra_cameras)
    print((Path(args.out) / "summary.md").read_text(), end="")
    return 0
