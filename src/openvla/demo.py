"""`openvla demo`: the main job end to end (placeholder shape until the training demo lands)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job end to end on this machine")
    p.add_argument("--out", default="demo_out", help="folder for the demo's model and report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from openvla import VLA, get_preset
    from openvla.model.cli import predict

    out = Path(args.out)
    vla = VLA.create(get_preset("tiny"), ["pick up the red block"], seed=0)
    vla.config.norm_stats = {"demo": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}}
    vla.save_pretrained(out / "tiny-random")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(out / "image.png")
    print(f"saved a tiny random VLA to {out / 'tiny-random'}; its action for the demo image:")
    return predict(argparse.Namespace(checkpoint=str(out / "tiny-random"), image=str(out / "image.png"),
                                      instruction="pick up the red block", unnorm_key=None))
