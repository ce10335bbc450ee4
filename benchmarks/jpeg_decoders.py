"""How far each JPEG decoder is from the OpenVLA reference's pixels (``tf.io.decode_image``), and how fast.

Needs TensorFlow, which openvla itself does not; run it from a scratch environment, e.g.::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu simplejpeg pillow opencv-python-headless
    PYTHONPATH=src /tmp/tfenv/bin/python benchmarks/jpeg_decoders.py
    PYTHONPATH=src /tmp/tfenv/bin/python benchmarks/jpeg_decoders.py --write-fixture tests/data/tf_decoded_jpeg.npz

Images: camera-like scenes (gradients, discs, noise) of six sizes, each encoded five ways (TensorFlow
quality 95 and 75 with 4:2:0 chroma, quality 95 with 4:4:4, Pillow quality 90, Pillow progressive).
``--write-fixture`` stores the 37x48 scene's five JPEGs and TensorFlow's pixels of them for the tests.
"""

from __future__ import annotations

import argparse
import io
import os

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 3)
        img += rng.uniform(-120, 120, 3) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)[..., None]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encodings(img: np.ndarray, tf) -> dict[str, bytes]:
    out = {"tf q95 4:2:0": tf.io.encode_jpeg(img, quality=95).numpy(),
           "tf q75 4:2:0": tf.io.encode_jpeg(img, quality=75).numpy(),
           "tf q95 4:4:4": tf.io.encode_jpeg(img, quality=95, chroma_downsampling=False).numpy()}
    for name, kw in {"pil q90": {"quality": 90}, "pil q95 progressive": {"quality": 95, "progressive": True}}.items():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", **kw)
        out[name] = buf.getvalue()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-fixture", help="write JPEGs and TensorFlow's pixels to this .npz")
    args = parser.parse_args()
    import cv2
    import tensorflow as tf

    from openvla.data.image_decode import decode_image

    tf.config.threading.set_intra_op_parallelism_threads(1)
    decoders = {
        "openvla reference (simplejpeg fastdct)": lambda d: decode_image(d, "reference"),
        "openvla accurate (Pillow)": lambda d: decode_image(d, "accurate"),
        "cv2.imdecode": lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR_RGB),
        "tf decode_jpeg INTEGER_ACCURATE": lambda d: tf.io.decode_jpeg(d, dct_method="INTEGER_ACCURATE").numpy(),
    }
    reference = lambda d: tf.io.decode_image(d, expand_animations=False, dtype=tf.uint8).numpy()  # noqa: E731
    totals = {k: [0, 0, 0] for k in decoders}  # values, differing values, max difference
    fixture: dict[str, np.ndarray] = {}
    for i, (h, w) in enumerate([(256, 256), (224, 224), (180, 320), (127, 93), (480, 640), (37, 48)]):
        for j, data in enumerate(encodings(scene(h, w, i), tf).values()):
            want = reference(data).astype(np.int16)
            if i == 5:  # the small odd size: every encoding into the fixture
                fixture[f"jpeg_{j}"] = np.frombuffer(data, np.uint8)
                fixture[f"pixels_{j}"] = want.astype(np.uint8)
            for name, fn in decoders.items():
                diff = np.abs(fn(data).astype(np.int16) - want)
                t = totals[name]
                t[0], t[1], t[2] = t[0] + diff.size, t[1] + int((diff > 0).sum()), max(t[2], int(diff.max()))
    print(f"tensorflow {tf.__version__}; 30 images; against tf.io.decode_image (the reference's decoding)")
    print("| decoder | values differing | max difference (grey levels) |\n| --- | ---: | ---: |")
    for name, (n, differ, worst) in totals.items():
        print(f"| {name} | {differ / n * 100:.2f}% | {worst} |")
    if args.write_fixture:
        np.savez_compressed(args.write_fixture, **fixture)
        print(f"wrote {args.write_fixture}")


if __name__ == "__main__":
    main()
