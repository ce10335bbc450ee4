"""`openvla train` and `openvla merge`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train from scratch or fine-tune (full, LoRA, frozen vision, ...)")
    p.add_argument("--config", help="a JSON file of TrainConfig fields")
    p.add_argument("--preset", help="model preset to train from scratch (openvla-7b, small, tiny)")
    p.add_argument("--checkpoint", help="checkpoint to fine-tune (ours or the OpenVLA layout)")
    p.add_argument("--data", nargs="+", help="dataset folders (our LeRobot-format datasets)")
    p.add_argument("--out", help="run folder (resumes if it holds checkpoints)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override any config field")
    p.set_defaults(func=train_command)

    m = sub.add_parser("merge", help="merge a LoRA adapter into its base model, streaming (about one tensor of memory)")
    m.add_argument("--base", required=True, help="the base checkpoint the adapter was trained on")
    m.add_argument("--adapter", required=True, help="the adapter folder (RUN/adapter)")
    m.add_argument("--out", required=True)
    m.add_argument("--layout", choices=("native", "openvla"), default=None,
                   help="our layout or the released OpenVLA one (default: the base's); shards and dtype are kept")
    m.set_defaults(func=merge_command)


def train_command(args: argparse.Namespace) -> int:
    from openvla.threads import set_threads
    from openvla.train.config import TrainConfig
    from openvla.train.trainer import train

    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    pairs = list(args.set)
    for key in ("preset", "checkpoint", "out"):
        if getattr(args, key):
            pairs.append(f"{key}={getattr(args, key)}")
    if args.checkpoint:
        pairs.append("preset=null")
    if args.data:
        pairs.append("data=" + ",".join(args.data))
    cfg = cfg.with_overrides(pairs)
    cfg.validate()
    set_threads(workers=cfg.num_workers)  # each loader worker process gets a core
    final = train(cfg)
    print(f"final model: {final}")
    return 0


def merge_command(args: argparse.Namespace) -> int:
    from openvla.train.merge import merge_adapter

    print(f"merged model: {merge_adapter(args.base, args.adapter, args.out, layout=args.layout)}")
    return 0
