"""Decoding the encoded camera images of RLDS records, with the reference's JPEG pixels by default.

The OpenVLA reference decodes RLDS images with ``tf.io.decode_image``, whose JPEG default is libjpeg-turbo's
fast integer IDCT (``dct_method="INTEGER_FAST"``) with fancy upsampling. ``"reference"`` gives those pixels
bit for bit through simplejpeg (libjpeg-turbo with ``fastdct=True``), without TensorFlow; ``"accurate"`` is
libjpeg's accurate integer IDCT through Pillow (what PIL, OpenCV and ``dct_method="INTEGER_ACCURATE"``
give). PNG and other lossless formats decode the same either way.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

JPEG_DECODERS = ("reference", "accurate")


def _reference_jpeg(data: bytes, where: str) -> np.ndarray:
    try:
        import simplejpeg
    except ImportError as err:
        raise RuntimeError("the reference's JPEG decoding needs simplejpeg (the data extra): `pip install "
                           "simplejpeg`, or decode with jpeg_decoder='accurate' (--jpeg-decoder accurate)") from err
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    except ValueError as err:
        raise ValueError(f"{where}: cannot decode image: {err}") from err


def decode_image(image: Any, jpeg_decoder: str = "reference", where: str = "") -> np.ndarray:
    """An encoded image (or an already decoded uint8 HxWx3 array) as uint8 HxWx3 RGB."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        return image
    if jpeg_decoder not in JPEG_DECODERS:
        raise ValueError(f"jpeg_decoder must be one of {JPEG_DECODERS}, got {jpeg_decoder!r}")
    data = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else image
    if jpeg_decoder == "reference" and isinstance(data, bytes) and data[:2] == b"\xff\xd8":
        return _reference_jpeg(data, where)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{where}: cannot decode image: {err}") from err
