"""The one mapping between the world and the model, used both ways: a raw training frame -> a training sample
(in the loader's workers), observations -> model inputs, and normalised model outputs -> robot actions.

Images take one path in training and at inference (``prepare_frame`` then ``transform``):
1. optional JPEG round trip (``jpeg_quality``), then, for models trained on our data, a Lanczos resize of the raw
   frame to the model's size (``frame_resize``, as the reference's RLDS pipeline and its LIBERO evaluation do);
2. training: the reference augmentation (random crop + colour); inference: the centre crop when the model was
   trained with random crops (``center_crop``);
3. the reference processor's transform, exactly: ``resize-naive`` (bicubic stretch), ``letterbox`` (pad once with
   the LAST backbone's fill, ``int(diff / 2)`` per side, then as resize-crop) or ``resize-crop`` (shorter side to
   the size, the longer side truncated, bicubic; centre crop), then to [0, 1] and each backbone's mean/std,
   stacked on channels. Released checkpoints run step 3 only, as the reference does.
Actions and proprio are normalised and un-normalised by one ``Normalizer`` per dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from openvla.config import LEGACY_CAMERAS, VLAConfig
from openvla.data.normalize import Normalizer
from openvla.data.transforms import augment_image, center_crop, resize
from openvla.model.action_tokenizer import ActionTokenizer
from openvla.model.heads import head_class
from openvla.model.llm_spec import PROMPT, LLMSpec, build_prompt

ImageLike = Image.Image | np.ndarray
STRATEGIES = ("resize-naive", "letterbox", "resize-crop")
FRAME_RESIZES = (None, "lanczos")
IGNORE_INDEX = -100
PROMPT_CACHE = 4096  # tokenised prompts kept (training sees a few tasks; a server any text)

__all__ = ["PROMPT", "VLAProcessor", "build_prompt", "to_array"]


def to_array(image: ImageLike) -> np.ndarray:
    """A PIL image or a uint8 HxWx3 array -> uint8 HxWx3 array; anything else is a clear error."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 HxWx3, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image array must be uint8 HxWx3, got shape {image.shape}")
        return image
    raise ValueError(f"image must be a PIL.Image or a uint8 HxWx3 numpy array, got {type(image).__name__}")


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG at ``quality`` and decode again (what a robot's compressed camera stream does)."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


class VLAProcessor:
    """Built from the model config (image geometry, cameras, normalisation, statistics), the tokenizer and the
    action head; everything it needs is in the checkpoint's config, so it is saved with the weights."""

    def __init__(self, config: VLAConfig, tokenizer: Any | None = None) -> None:
        if config.image_resize_strategy not in STRATEGIES:
            raise ValueError(f"unknown image_resize_strategy {config.image_resize_strategy!r}; valid: {list(STRATEGIES)}")
        if config.frame_resize not in FRAME_RESIZES:
            raise ValueError(f"unknown frame_resize {config.frame_resize!r}; valid: {list(FRAME_RESIZES)}")
        self.config = config
        self.tokenizer = tokenizer
        self.llm = LLMSpec.from_config(config)
        self.action_tokenizer = ActionTokenizer(config.action_vocab_size, config.n_action_bins)
        self.head = head_class(config.action_head)
        self.size = config.image_size
        self._mean = [np.asarray(v.mean, np.float32) for v in config.vision]
        self._std = [np.asarray(v.std, np.float32) for v in config.vision]
        # The reference's per-backbone loop overwrites its fill: the last backbone's colour pads for all.
        self._fill = tuple(int(255 * m) for m in config.vision[-1].mean)
        self._prompts: dict[str, list[int]] = {}
        self._normalizers: dict[str, Normalizer] = {}

    # ------------------------------------------------------------------------------------------ images
    def prepare_frame(self, image: ImageLike, augment_seed: int | None = None) -> np.ndarray:
        """Steps 1-2: a raw camera frame -> the uint8 frame the transform takes; ``augment_seed`` (training)
        draws the random crop and colour jitter."""
        frame = to_array(image)
        cfg = self.config
        if cfg.jpeg_quality:
            frame = jpeg_round_trip(frame, cfg.jpeg_quality)
        if cfg.frame_resize == "lanczos":
            frame = resize(frame, self.size)
        if augment_seed is not None:
            return augment_image(frame, augment_seed)
        return center_crop(frame) if cfg.center_crop else frame

    def _geometry(self, img: Image.Image) -> Image.Image:
        """Step 3's resize and crop, as the reference's torchvision calls compute them."""
        s = self.size
        strategy = self.config.image_resize_strategy
        if strategy == "resize-naive":
            return img if img.size == (s, s) else img.resize((s, s), Image.BICUBIC)
        if strategy == "letterbox":
            w, h = img.size
            side = max(w, h)
            pad_w, pad_h = int((side - w) / 2), int((side - h) / 2)
            canvas = Image.new("RGB", (w + 2 * pad_w, h + 2 * pad_h), self._fill)
            canvas.paste(img, (pad_w, pad_h))
            img = canvas
        w, h = img.size  # shorter side -> s, longer side truncated (torchvision's resize with an int size)
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC)
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        return img.crop((left, top, left + s, top + s)) if (nw, nh) != (s, s) else img

    def transform(self, frame: np.ndarray) -> torch.Tensor:
        """Step 3: uint8 HxWx3 -> float32 [3 * n_backbones, S, S], each backbone's mean/std."""
        arr = np.asarray(self._geometry(Image.fromarray(frame, "RGB")), dtype=np.float32) / np.float32(255.0)
        planes = [((arr - mean) / std).transpose(2, 0, 1) for mean, std in zip(self._mean, self._std, strict=True)]
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(planes, axis=0)))

    def preprocess_image(self, image: ImageLike) -> torch.Tensor:
        """One camera frame -> its model input at inference: [3 * n_backbones, S, S]."""
        return self.transform(self.prepare_frame(image))

    def pixel_values(self, frames: Sequence[ImageLike], augment_seed: int | None = None) -> torch.Tensor:
        """The frames of every camera, in the model's camera order -> [3 * n_backbones * cameras, S, S];
        camera i is augmented with seed ``augment_seed + i``."""
        planes = [self.transform(self.prepare_frame(f, None if augment_seed is None else augment_seed + i))
                  for i, f in enumerate(frames)]
        return planes[0] if len(planes) == 1 else torch.cat(planes, dim=0)

    def camera_frames(self, observation: dict[str, Any]) -> list[ImageLike]:
        """The model's cameras from an observation, by name: ``images[name]``, then ``observation[name]``, then
        the legacy keys (``image`` for the first camera, ``wrist_image`` for the second)."""
        named = observation.get("images") or {}
        frames = []
        for i, name in enumerate(self.config.cameras):
            frame = named.get(name, observation.get(name))
            if frame is None and i < len(LEGACY_CAMERAS):
                frame = observation.get(LEGACY_CAMERAS[i])
            if frame is None:
                raise ValueError(f"this model takes {len(self.config.cameras)} camera(s) {self.config.cameras}; "
                                 f"the observation has no {name!r} image (send it as images[{name!r}])")
            frames.append(frame)
        return frames

    # -------------------------------------------------------------------------------------------- text
    def tokenize(self, instruction: str) -> list[int]:
        """The prompt's ids, starting with BOS (without the empty token, which the model appends)."""
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer: pass input_ids instead of an instruction, "
                             "or save the checkpoint with its tokenizer")
        ids = self._prompts.get(instruction)
        if ids is None:
            if len(self._prompts) >= PROMPT_CACHE:  # a server sees arbitrary instructions: keep the cache bounded
                self._prompts.clear()
            ids = self._prompts[instruction] = self.llm.prompt_ids(self.tokenizer, instruction)
        return list(ids)

    # ------------------------------------------------------------------------------- normalisation
    def normalizer(self, unnorm_key: str | None) -> Normalizer | None:
        """The dataset's normaliser (None: no statistics, actions stay in [-1, 1])."""
        if unnorm_key is None:
            return None
        if unnorm_key not in self._normalizers:
            stats = self.config.norm_stats.get(unnorm_key)
            if stats is None:
                raise ValueError(f"unknown unnorm_key {unnorm_key!r}; valid keys: {sorted(self.config.norm_stats)}")
            self._normalizers[unnorm_key] = Normalizer(stats, self.config.action_normalization)
        return self._normalizers[unnorm_key]

    def normalize_proprio(self, state: Any, unnorm_key: str | None) -> np.ndarray:
        """Raw proprio [..., P] -> the model's range with the dataset's statistics (as in training)."""
        arr = np.asarray(state, dtype=np.float32)
        if arr.shape[-1] != self.config.proprio_dim:
            raise ValueError(f"proprio must have {self.config.proprio_dim} values, got shape {arr.shape}")
        norm = self.normalizer(unnorm_key)
        return arr if norm is None or norm.stats.get("proprio") is None else norm.normalize_state(arr)

    def to_robot_actions(self, normalized: np.ndarray, unnorm_key: str | None) -> np.ndarray:
        """Model outputs in [-1, 1] -> robot units (dimensions outside the mask, the gripper, pass through)."""
        norm = self.normalizer(unnorm_key)
        return np.asarray(normalized, dtype=np.float64) if norm is None else norm.unnormalize_actions(normalized)

    # ---------------------------------------------------------------------------------- both paths
    def training_sample(self, frame: dict[str, Any], augment: bool = False) -> dict[str, Any]:
        """A raw frame from the loader (``images`` by camera, raw ``actions`` [T, D], ``action_mask`` [T],
        ``state``, ``instruction``, ``dataset_name``, ``seed``) -> ids, labels, pixels, normalised targets."""
        cfg = self.config
        key = frame.get("dataset_name") or None
        norm = self.normalizer(key) if key in cfg.norm_stats else None
        raw = np.asarray(frame["actions"], dtype=np.float32)
        raw = raw.reshape(-1, raw.shape[-1])[: cfg.action_chunk]
        actions = raw if norm is None else norm.normalize_actions(raw)
        prompt = self.tokenize(frame["instruction"]) + [self.llm.empty_token_id]
        action_ids = self.head.target_ids(self.action_tokenizer, actions, cfg)
        ids = prompt + action_ids + [self.llm.eos_token_id]
        labels = [IGNORE_INDEX] * len(prompt) + action_ids + [self.llm.eos_token_id]
        frames = [frame["images"][cam] for cam in cfg.cameras]
        seed = int(frame["seed"]) if augment else None
        mask = frame.get("action_mask")
        sample = {"input_ids": ids, "labels": labels, "actions": torch.from_numpy(np.ascontiguousarray(actions)),
                  "pixel_values": self.pixel_values(frames, seed), "dataset_name": key or "",
                  "action_mask": torch.from_numpy(np.asarray(mask if mask is not None else [True] * len(actions),
                                                             dtype=bool)[: cfg.action_chunk])}
        if cfg.proprio_dim:
            sample["proprio"] = torch.from_numpy(self.normalize_proprio(frame["state"], key))
        return sample

    def observations_to_inputs(self, observations: Sequence[dict[str, Any]], unnorm_key: str | None
                               ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor | None]:
        """Observations (cameras by name, ``instruction``, raw ``state``) -> prompt ids per row, pixel values
        [B, C, S, S] and normalised proprio [B, P] (None when the model takes none)."""
        prompts = [self.tokenize(o["instruction"]) for o in observations]
        pixels = torch.stack([self.pixel_values(self.camera_frames(o)) for o in observations])
        proprio = None
        if self.config.proprio_dim:
            if any(o.get("state") is None for o in observations):
                raise ValueError(f"this model takes a {self.config.proprio_dim}-D proprio state; pass proprio "
                                 "(the observation's 'state')")
            proprio = torch.from_numpy(np.stack([self.normalize_proprio(o["state"], unnorm_key)
                                                 for o in observations]))
        return prompts, pixels, proprio

    def __call__(self, instruction: str | list[str], images: ImageLike | list[ImageLike]) -> dict:
        """Reference-style call: prompts and one image each -> ``input_ids`` (id lists) and ``pixel_values``."""
        instructions = [instruction] if isinstance(instruction, str) else list(instruction)
        image_list = list(images) if isinstance(images, list | tuple) else [images]
        if len(instructions) == 1 and len(image_list) > 1:
            instructions = instructions * len(image_list)
        if len(instructions) != len(image_list):
            raise ValueError(f"got {len(image_list)} images for {len(instructions)} instructions")
        return {"input_ids": [self.tokenize(t) for t in instructions],
                "pixel_values": torch.stack([self.preprocess_image(im) for im in image_list])}
