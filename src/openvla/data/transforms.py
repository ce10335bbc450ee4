"""Image resize, the reference's training augmentation, and the matching evaluation centre crop.

The reference (dlimp ``augment_image`` in TF, on float images in [0, 1], clipped after every step) runs
``random_resized_crop(scale=0.9, ratio=1)`` -> ``random_brightness(0.2)`` -> ``random_contrast(0.8, 1.2)``
-> ``random_saturation(0.8, 1.2)`` -> ``random_hue(0.05)``. Here, on uint8 images with OpenCV:
* the crop is TF ``crop_and_resize`` (bilinear, corner-aligned sampling) as one affine warp; its offset is
  ``u * (1 - sqrt(0.9))`` on *both* axes with the same ``u``, because the reference draws both offsets from
  the same stateless seed (so its crops lie on the diagonal);
* brightness and contrast (around the per-channel mean of the brightened image) are one exact 256-entry
  table per channel from uint8 levels to float;
* saturation and hue are one float32 HSV round trip: the result is the float pipeline's (``augment_exact``)
  up to float32 and the final rounding to uint8.
Parameters are drawn from ``numpy.random.default_rng(seed)``, so an image and a seed give one result.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

CROP_AREA = 0.9
BRIGHTNESS = 0.2
CONTRAST = (0.8, 1.2)
SATURATION = (0.8, 1.2)
HUE = 0.05
_LEVELS = np.arange(256)

# OpenCV's thread pool does not survive fork: a DataLoader worker forked after the parent ran a threaded cv2
# call would hang on its first one. These per-frame calls are small; worker processes give the parallelism.
cv2.setNumThreads(0)


def resize(img: np.ndarray, size: int = 224) -> np.ndarray:
    """Resize to size x size with Lanczos-3 and antialiasing (as the reference's ``tf.image.resize``)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def _crop_resize(img: np.ndarray, area: float, u: float) -> np.ndarray:
    """TF ``crop_and_resize`` of a square (in relative coordinates) of ``area``, offset ``u``, to the same size:
    output pixel (i, j) samples the input at (off (H - 1) + i side, off (W - 1) + j side), bilinearly."""
    h, w = img.shape[:2]
    side = math.sqrt(area)
    off = u * (1.0 - side)
    to_input = np.array([[side, 0.0, off * (w - 1)], [0.0, side, off * (h - 1)]])
    return cv2.warpAffine(img, to_input, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def center_crop(img: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """The evaluation-time crop for models trained with augmentation: the centre ``area`` resized back."""
    return _crop_resize(np.ascontiguousarray(img), area, 0.5)


def augment_params(seed: int) -> dict[str, float]:
    """The random draws of one augmentation: crop offset, brightness delta, contrast, saturation, hue."""
    rng = np.random.default_rng(seed)
    return {
        "crop_offset": float(rng.random()),
        "brightness": float(rng.uniform(-BRIGHTNESS, BRIGHTNESS)),
        "contrast": float(rng.uniform(*CONTRAST)),
        "saturation": float(rng.uniform(*SATURATION)),
        "hue": float(rng.uniform(-HUE, HUE)),
    }


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (last axis) to HSV in [0, 1], as ``tf.image.rgb_to_hsv``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0)
    d = np.where(delta > 0, delta, 1)
    h = np.where(v == r, (g - b) / d, np.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = np.where(delta > 0, (h / 6) % 1.0, 0)
    return np.stack([h, s, v], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] to RGB in [0, 1], as ``tf.image.hsv_to_rgb`` (channel c = v - v s clip(k, 0, 1))."""
    h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
    k = (np.array([5.0, 3.0, 1.0], dtype=hsv.dtype) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def saturation_hue(rgb: np.ndarray, saturation: float, hue: float) -> np.ndarray:
    """Exact float ``adjust_saturation`` then ``adjust_hue`` (each clipped), on RGB in [0, 1]."""
    hsv = rgb_to_hsv(rgb)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    rgb = np.clip(hsv_to_rgb(hsv), 0, 1)
    hsv = rgb_to_hsv(rgb)
    hsv[..., 0] = (hsv[..., 0] + hue) % 1.0
    return np.clip(hsv_to_rgb(hsv), 0, 1)


def brightness_contrast_table(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """A [256, 1, 3] float32 ``cv2.LUT`` table from uint8 levels to [0, 1]: brightness, then contrast around
    each brightened channel's mean (from the histogram, so exact)."""
    bright = np.clip(_LEVELS / 255.0 + brightness, 0, 1)
    hist = np.stack([cv2.calcHist([img], [c], None, [256], [0, 256]).ravel() for c in range(3)]).astype(np.float64)
    means = hist @ bright / hist.sum(axis=1)
    table = np.clip((bright[:, None] - means) * contrast + means, 0, 1)
    return table.astype(np.float32)[:, None, :]


def saturation_hue_fast(rgb: np.ndarray, saturation: float, hue: float) -> np.ndarray:
    """``saturation_hue`` on float32 RGB in [0, 1] with one OpenCV HSV round trip (H in degrees). The maths
    composes: saturation keeps H and V and stays within [0, 1], so its clip and round trip change nothing."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = hsv[..., 1]
    sat *= saturation
    np.minimum(sat, 1, out=sat)
    hsv[..., 0] += 360 * (hue % 1.0)  # OpenCV wraps H >= 360 on the way back
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def augment_image(img: np.ndarray, seed: int) -> np.ndarray:
    """The reference training augmentation of one uint8 HxWx3 image, seeded; returns the same size."""
    p = augment_params(seed)
    out = _crop_resize(np.ascontiguousarray(img), CROP_AREA, p["crop_offset"])
    rgb = cv2.LUT(out, brightness_contrast_table(out, p["brightness"], p["contrast"]))
    return cv2.convertScaleAbs(saturation_hue_fast(rgb, p["saturation"], p["hue"]), alpha=255)  # rounds


def augment_exact(img: np.ndarray, seed: int) -> np.ndarray:
    """Slow float reference of ``augment_image`` (same draws, no lookup tables), for tests."""
    p = augment_params(seed)
    x = _crop_resize(np.ascontiguousarray(img), CROP_AREA, p["crop_offset"]).astype(np.float64) / 255.0
    x = np.clip(x + p["brightness"], 0, 1)
    means = x.reshape(-1, 3).mean(0)
    x = np.clip((x - means) * p["contrast"] + means, 0, 1)
    x = saturation_hue(x, p["saturation"], p["hue"])
    return np.rint(x * 255).astype(np.uint8)
