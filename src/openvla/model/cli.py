"""`openvla predict`: one image and one instruction in, one action out."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict an action for an image and an instruction")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (ours or the OpenVLA layout)")
    p.add_argument("--image", required=True, help="image file (any format PIL reads)")
    p.add_argument("--instruction", required=True)
    p.add_argument("--unnorm-key", default=None, help="dataset whose statistics un-normalise the action")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from openvla.model.vla import VLA

    try:
        image = Image.open(args.image)
        image.load()
    except OSError as err:
        raise ValueError(f"cannot read image {args.image}: {err}") from err
    vla = VLA.from_pretrained(args.checkpoint)
    action = vla.predict_action(image=image, instruction=args.instruction, unnorm_key=args.unnorm_key)
    print(np.array2string(np.asarray(action), precision=5, separator=", "))
    return 0
