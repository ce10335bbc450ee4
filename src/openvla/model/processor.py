"""Image + instruction -> model inputs, exactly as OpenVLA's PrismaticProcessor does it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from openvla.config import VLAConfig

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"

ImageLike = Image.Image | np.ndarray


def build_prompt(instruction: str) -> str:
    """The OpenVLA inference prompt (no trailing space; the model appends the empty token itself)."""
    return PROMPT.format(instruction=instruction.lower())


def to_pil(image: ImageLike) -> Image.Image:
    """Accept a PIL image or a uint8 HxWx3 array; anything else is a clear error."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 HxWx3, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image array must be uint8 HxWx3, got shape {image.shape}")
        return Image.fromarray(image, "RGB")
    raise ValueError(f"image must be a PIL.Image or a uint8 HxWx3 numpy array, got {type(image).__name__}")


class VLAProcessor:
    """Resizes and normalises images per backbone (stacked on channels) and tokenises prompts."""

    def __init__(self, config: VLAConfig, tokenizer: Any | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.size = config.image_size
        self.strategy = config.image_resize_strategy
        if self.strategy not in ("resize-naive", "letterbox", "resize-crop"):
            raise ValueError(f"unknown image_resize_strategy {self.strategy!r}; "
                             "valid: ['resize-naive', 'letterbox', 'resize-crop']")
        self._mean = [np.asarray(v.mean, np.float32) for v in config.vision]
        self._std = [np.asarray(v.std, np.float32) for v in config.vision]

    def _resize(self, img: Image.Image, fill: tuple[int, ...] | None) -> np.ndarray:
        if self.config.center_crop:
            w, h = img.size
            side = math.sqrt(0.9)
            cw, ch = w * side, h * side
            img = img.crop(((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2))
        if fill is not None:  # letterbox: pad to a square with the backbone's mean colour
            w, h = img.size
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), fill)
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        s = self.size
        if self.strategy == "resize-crop":
            w, h = img.size
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            img = img.resize((nw, nh), Image.BICUBIC)
            left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
            img = img.crop((left, top, left + s, top + s))
        elif img.size != (s, s):
            img = img.resize((s, s), Image.BICUBIC)
        return np.asarray(img, dtype=np.float32) / np.float32(255.0)

    def preprocess_image(self, image: ImageLike) -> torch.Tensor:
        """One image -> float32 [3 * n_backbones, S, S] (e.g. [6, 224, 224] for DINOv2 + SigLIP)."""
        img = to_pil(image)
        planes = []
        shared = None if self.strategy == "letterbox" else self._resize(img, None)
        for mean, std in zip(self._mean, self._std, strict=True):
            arr = shared if shared is not None else self._resize(img, tuple(int(255 * m) for m in mean))
            planes.append(((arr - mean) / std).transpose(2, 0, 1))
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(planes, axis=0)))

    def tokenize(self, instruction: str) -> list[int]:
        """The prompt's ids, starting with BOS (without the empty token, which the model appends)."""
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer: pass input_ids instead of an instruction, "
                             "or save the checkpoint with its tokenizer")
        return list(self.tokenizer(build_prompt(instruction), add_special_tokens=True)["input_ids"])

    def __call__(self, instruction: str | list[str], images: ImageLike | list[ImageLike]) -> dict:
        """Batch of prompts and images -> ``input_ids`` (list of id lists) and ``pixel_values`` [B, C, S, S]."""
        instructions = [instruction] if isinstance(instruction, str) else list(instruction)
        image_list = images if isinstance(images, list | tuple) else [images]
        if len(instructions) == 1 and len(image_list) > 1:
            instructions = instructions * len(image_list)
        if len(instructions) != len(image_list):
            raise ValueError(f"got {len(image_list)} images for {len(instructions)} instructions")
        pixel_values = torch.stack([self.preprocess_image(im) for im in image_list])
        return {"input_ids": [self.tokenize(t) for t in instructions], "pixel_values": pixel_values}
