"""Training frames -> VLA inputs: the prompt, the action tokens as labels, the pixel tensor.

``SampleBuilder`` runs inside the loader's worker processes, so tokenisation and image preprocessing never
hold up the training step; ``collate`` right-pads a list of samples into a batch (reference behaviour).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from openvla.model.action_tokenizer import ActionTokenizer
from openvla.model.processor import VLAProcessor
from openvla.model.vla import IGNORE_INDEX


class SampleBuilder:
    """Frame dict (images, normalised actions [T, D], instruction, state) -> ids, labels, pixels, targets."""

    def __init__(self, processor: VLAProcessor, action_tokenizer: ActionTokenizer, empty_token_id: int,
                 eos_token_id: int, cameras: tuple[str, ...] = ("image",), chunk: int = 1,
                 proprio: bool = False) -> None:
        self.processor = processor
        self.action_tokenizer = action_tokenizer
        self.empty_token_id = empty_token_id
        self.eos_token_id = eos_token_id
        self.cameras = tuple(cameras)
        self.chunk = chunk
        self.proprio = proprio
        self._prompts: dict[str, list[int]] = {}

    def __call__(self, frame: dict[str, Any]) -> dict[str, Any]:
        text = frame["instruction"]
        prompt = self._prompts.get(text)
        if prompt is None:
            prompt = self._prompts[text] = self.processor.tokenize(text) + [self.empty_token_id]
        actions = np.asarray(frame["actions"], dtype=np.float32).reshape(-1, np.shape(frame["actions"])[-1])
        actions = actions[: self.chunk]
        action_ids = self.action_tokenizer.encode(actions).reshape(-1).tolist()
        ids = prompt + action_ids + [self.eos_token_id]
        labels = [IGNORE_INDEX] * len(prompt) + action_ids + [self.eos_token_id]
        pixels = [self.processor.preprocess_image(frame["images"][cam]) for cam in self.cameras]
        sample = {"input_ids": ids, "labels": labels, "actions": torch.from_numpy(actions),
                  "pixel_values": pixels[0] if len(pixels) == 1 else torch.cat(pixels, dim=0),
                  "dataset_name": frame.get("dataset_name", "")}
        if self.proprio:
            sample["proprio"] = torch.as_tensor(np.asarray(frame["state"], dtype=np.float32))
        return sample


def collate(samples: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad ids (pad id) and labels (-100); attention mask marks real tokens."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n] = torch.tensor(s["input_ids"])
        labels[i, :n] = torch.tensor(s["labels"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask,
             "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
             "actions": torch.stack([s["actions"] for s in samples]),
             "dataset_names": [s["dataset_name"] for s in samples]}
    if "proprio" in samples[0]:
        batch["proprio"] = torch.stack([s["proprio"] for s in samples])
    return batch


class Collator:
    """Picklable ``collate`` bound to a pad id (loader workers need a top-level callable)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples, self.pad_token_id)
