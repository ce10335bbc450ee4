"""`openvla predict`: camera images, an instruction and (if the model takes one) a proprio state in, an action
(or chunk) out. Every input a model takes can be given here."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict an action for camera images and an instruction")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (ours or the OpenVLA layout)")
    p.add_argument("--image", default=None, help="the primary camera's image file (any format PIL reads)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=FILE",
                   help="an image for the camera NAME (repeat for each camera; `openvla predict` lists the "
                        "model's cameras when one is missing)")
    p.add_argument("--instruction", required=True)
    p.add_argument("--proprio", default=None, help="the raw proprio state, comma-separated numbers")
    p.add_argument("--unnorm-key", default=None, help="dataset whose statistics un-normalise the action")
    p.set_defaults(func=predict)


def _read_image(path: str) -> Any:
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return image


def predict(args: argparse.Namespace) -> int:
    import numpy as np

    from openvla.model.vla import VLA

    images = {}
    for item in args.camera:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--camera expects NAME=FILE, got {item!r}")
        images[name] = _read_image(path)
    if args.image is None and not images:
        raise ValueError("give the primary camera's image with --image FILE (and other cameras with --camera NAME=FILE)")
    proprio = None
    if args.proprio is not None:
        try:
            proprio = np.asarray([float(x) for x in args.proprio.replace(" ", "").split(",") if x], np.float32)
        except ValueError as err:
            raise ValueError(f"--proprio expects comma-separated numbers, got {args.proprio!r}") from err
    vla = VLA.from_pretrained(args.checkpoint)
    action = vla.predict_action(image=None if args.image is None else _read_image(args.image), images=images or None,
                                instruction=args.instruction, proprio=proprio, unnorm_key=args.unnorm_key)
    print(np.array2string(np.asarray(action), precision=5, separator=", "))
    return 0
