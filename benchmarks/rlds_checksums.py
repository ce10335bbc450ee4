"""What checking TFRecord CRCs costs: records/s of reading an RLDS shard with and without the check.

    .venv/bin/python benchmarks/rlds_checksums.py            # 40 bridge-like episodes, 30 steps, 2 JPEG cameras

It writes bridge_orig-shaped episodes (two 256x256 JPEG cameras, as Bridge V2) to a temporary TFDS folder and
times (a) ``read_records`` alone (file reading plus the CRC, the whole cost of the check) and (b) the full
RLDS reader (``RLDSDataset``: parsing, OXE standardisation, image decoding), each with ``verify`` on and off.
The pure-Python CRC (used when google-crc32c is missing) is timed on a few records.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
import rlds_builders as rb  # noqa: E402

from openvla.data import tfrecord  # noqa: E402
from openvla.data.rlds import RLDSDataset  # noqa: E402


def _camera_frames(n: int, seed: int) -> list[bytes]:
    """JPEG frames with image-like content (smooth gradients, moving blob, noise), ~15 KB each at 256x256."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    out = []
    for t in range(n):
        img = np.stack([xx, yy, (xx + yy + 8 * t) % 256], -1).astype(np.float32)
        img += 60 * np.exp(-((xx - 4 * t - 40) ** 2 + (yy - 128) ** 2) / 800.0)[..., None]
        img += rng.normal(0, 6, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def build(root: Path, episodes: int, steps: int) -> Path:
    features = rb.rlds_features(
        {"observation": rb.features_dict({"image_0": rb.image(256, 256, "jpeg"), "image_1": rb.image(256, 256, "jpeg"),
                                          "state": rb.tensor([7])}),
         "action": rb.tensor([7]), "language_instruction": rb.text(), "is_first": rb.scalar("bool"),
         "is_last": rb.scalar("bool"), "is_terminal": rb.scalar("bool"), "reward": rb.scalar("float32"),
         "discount": rb.scalar("float32")},
        {"file_path": rb.text()})
    eps = []
    for i in range(episodes):
        step, meta = rb.bridge_episode(steps, seed=i)
        step["observation"]["image_0"] = _camera_frames(steps, i)
        step["observation"]["image_1"] = _camera_frames(steps, i + 1000)
        eps.append((step, meta))
    return rb.write_rlds(root, "bridge_orig", features, eps, shards=1)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp), args.episodes, args.steps)
        shard = next(folder.glob("*.tfrecord-*"))
        n, mb = args.episodes, shard.stat().st_size / 2**20
        print(f"{n} records, {mb:.1f} MB ({mb / n:.2f} MB a record), crc32c from "
              f"{'google-crc32c' if tfrecord._crc32c_fast else 'pure Python'}")
        print("| what | verify | s | records/s | MB/s |\n| --- | --- | ---: | ---: | ---: |")
        for verify in (False, True):
            t = _best(lambda v=verify: sum(1 for _ in tfrecord.read_records(shard, v)), args.repeats)
            print(f"| read_records | {verify} | {t:.3f} | {n / t:.0f} | {mb / t:.0f} |")
        for verify in (False, True):
            t = _best(lambda v=verify: sum(1 for _ in RLDSDataset(folder, verify_checksums=v)), args.repeats)
            print(f"| RLDSDataset (decode, standardise) | {verify} | {t:.3f} | {n / t:.1f} | {mb / t:.0f} |")
        record = next(tfrecord.read_records(shard, False))
        t = _best(lambda: tfrecord._crc32c_python(record), 1)
        print(f"| pure-Python crc32c of one record | True | {t:.3f} | {1 / t:.2f} | {len(record) / 2**20 / t:.2f} |")


if __name__ == "__main__":
    main()
