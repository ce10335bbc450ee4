"""`openvla <command>`: a thin front door. Each layer registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that define `register(subparsers)`; imported lazily so `openvla --help` stays fast.
COMMAND_MODULES = [
    "openvla.model.cli",  # predict
    "openvla.data.cli",  # data convert | info | stats
    "openvla.sim.cli",  # collect, eval
    "openvla.train.cli",  # train, merge
    "openvla.train.fast",  # fast-tokenizer
    "openvla.serve.cli",  # serve
    "openvla.demo",  # demo
    "openvla.experiments.generalist",  # experiment
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openvla", description="Vision-Language-Action toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("openvla"):
                continue  # that layer is not part of this build yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        print(f"openvla {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
