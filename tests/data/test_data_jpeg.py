"""RLDS JPEGs decode to the reference's pixels by default: TensorFlow's ``tf.io.decode_image`` (fast integer
IDCT), matched bit for bit without TensorFlow; ``jpeg_decoder="accurate"`` gives libjpeg's accurate IDCT.

``tf_decoded_jpeg.npz`` holds five JPEGs of one 37x48 scene (TensorFlow q95/q75 4:2:0, q95 4:4:4, Pillow q90,
Pillow progressive) and TensorFlow 2.21's pixels of them, written by ``benchmarks/jpeg_decoders.py``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rlds_builders as rb
from PIL import Image

from openvla.cli import main
from openvla.data.image_decode import decode_image
from openvla.data.lerobot import LeRobotDataset
from openvla.data.rlds import RLDSDataset

FIXTURE = np.load(Path(__file__).with_name("tf_decoded_jpeg.npz"))
JPEGS = [FIXTURE[f"jpeg_{i}"].tobytes() for i in range(5)]
TF_PIXELS = [FIXTURE[f"pixels_{i}"] for i in range(5)]


def _pil(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_reference_decoder_gives_tensorflows_pixels():
    for data, want in zip(JPEGS, TF_PIXELS, strict=True):
        np.testing.assert_array_equal(decode_image(data), want)
        accurate = decode_image(data, "accurate")
        np.testing.assert_array_equal(accurate, _pil(data))
        assert (accurate != want).mean() > 0.2  # the accurate IDCT is not the reference's
    with pytest.raises(ValueError, match="jpeg_decoder must be one of"):
        decode_image(JPEGS[0], "fast")


@pytest.fixture
def jpeg_rlds(tmp_path):
    n = 7  # bridge_orig drops the first and the last step: steps 1..5 are kept, one of each JPEG
    steps, meta = rb.bridge_episode(n, seed=0)
    steps["observation"]["image_0"] = [JPEGS[(i - 1) % 5] for i in range(n)]
    steps["observation"]["image_1"] = [JPEGS[(i + 1) % 5] for i in range(n)]
    features = rb.rlds_features(
        {"observation": rb.features_dict({"image_0": rb.image(37, 48, "jpeg"), "image_1": rb.image(37, 48, "jpeg"),
                                          "state": rb.tensor([7])}),
         "action": rb.tensor([7]), "language_instruction": rb.text(), "is_first": rb.scalar("bool"),
         "is_last": rb.scalar("bool"), "is_terminal": rb.scalar("bool"), "reward": rb.scalar("float32"),
         "discount": rb.scalar("float32")},
        {"file_path": rb.text()})
    return rb.write_rlds(tmp_path / "tfds", "bridge_orig", features, [(steps, meta)], shards=1)


def test_rlds_reader_and_convert_see_the_reference_pixels(jpeg_rlds, tmp_path):
    episode = next(iter(RLDSDataset(jpeg_rlds)))
    np.testing.assert_array_equal(episode.images["image"], np.stack(TF_PIXELS))
    accurate = next(iter(RLDSDataset(jpeg_rlds, jpeg_decoder="accurate")))
    np.testing.assert_array_equal(accurate.images["image"], np.stack([_pil(d) for d in JPEGS]))
    assert main(["data", "convert", str(jpeg_rlds), str(tmp_path / "dst")]) == 0
    converted = LeRobotDataset(tmp_path / "dst").episode(0)  # stored as PNG: the reference's pixels, losslessly
    np.testing.assert_array_equal(converted.images["image"], np.stack(TF_PIXELS))
    assert main(["data", "convert", str(jpeg_rlds), str(tmp_path / "acc"), "--jpeg-decoder", "accurate"]) == 0
    np.testing.assert_array_equal(LeRobotDataset(tmp_path / "acc").episode(0).images["image"],
                                  accurate.images["image"])
