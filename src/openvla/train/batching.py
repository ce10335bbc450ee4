"""Training samples -> batches. Samples come from ``VLAProcessor.training_sample`` (the same processor that
prepares observations at inference), run inside the loader's worker processes; ``collate`` right-pads them
into a batch (reference behaviour)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from openvla.model.processor import IGNORE_INDEX, VLAProcessor


def sample_builder(processor: VLAProcessor, augment: bool = False) -> partial:
    """The loader's frame transform: a picklable call of ``processor.training_sample``."""
    return partial(processor.training_sample, augment=augment)


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
             "action_mask": torch.stack([s["action_mask"] for s in samples]),
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
