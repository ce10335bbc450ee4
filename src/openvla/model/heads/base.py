"""The contract every action head fulfils (see ``docs/contributing.md``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from openvla.config import VLAConfig
    from openvla.model.vla import VLA, ModelInputs


@dataclass
class HeadOutput:
    """A training pass: the loss, the metrics to log (name -> scalar tensor), and the head's normalised
    actions [B, chunk, D] where it makes them in the same pass (the L1 head does)."""

    loss: torch.Tensor | None
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    predicted_actions: torch.Tensor | None = None


class ActionHead(nn.Module):
    """Base class: a head is an ``nn.Module`` held by the VLA as ``action_head`` (its weights are saved as
    ``action_head.*``). Subclasses set the class attributes and implement ``loss`` and ``sample``."""

    name: ClassVar[str]
    needs_parallel: ClassVar[bool] = True  # reads all action slots in one bidirectional pass
    extra_prefix_tokens: ClassVar[int] = 0  # tokens the head adds after the image/proprio prefix
    uses_lm_head: ClassVar[bool] = False  # False: the LM's vocabulary head is never used (and frozen)

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.check_config(config)

    @classmethod
    def check_config(cls, config: VLAConfig) -> None:
        """Refuse configurations the head cannot run, saying which key to change."""
        if cls.needs_parallel and not config.parallel_decoding:
            raise ValueError(f"action_head {cls.name!r} needs parallel_decoding: the head reads all slots at once")

    @classmethod
    def target_ids(cls, action_tokenizer: Any, actions: np.ndarray, config: VLAConfig | None = None) -> list[int]:
        """The ids that follow the prompt in a training sequence for normalised actions [chunk, D] (EOS is
        appended by the processor). Parallel heads use them only to mark the slots; ``config`` carries what a
        head learned from the data (the FAST tokenizer)."""
        return action_tokenizer.encode(actions).reshape(-1).tolist()

    def new_modules(self) -> list[str]:
        """Names (relative to the VLA) of the head's modules a pretrained VLM lacks: trained in every mode."""
        return ["action_head"] if any(True for _ in self.parameters()) else []

    def unused_prefixes(self) -> list[str]:
        """Parameter-name prefixes the head never reaches (no gradients, no optimiser state)."""
        return [] if self.uses_lm_head else ["language_model.lm_head."]

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        """The teacher-forced training pass on a batch."""
        raise NotImplementedError

    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        """Normalised actions [B, chunk, action_dim] (a float array) for a batch of packed prompts."""
        raise NotImplementedError


def fixed_noise(vla: VLA, batch: int) -> torch.Tensor:
    """The generative heads' starting point: one fixed-seed noise chunk [B, chunk, D], the same for every row and
    call, so the same inputs give the same actions (and batched rows equal their unbatched result)."""
    cfg, device = vla.config, vla.device
    seed = torch.Generator(device=device).manual_seed(0)
    return torch.randn(cfg.action_chunk, cfg.action_dim, generator=seed, device=device).expand(batch, -1, -1)


def valid_steps(inputs: ModelInputs, chunk: int) -> torch.Tensor | None:
    """[B, chunk] float weights of the chunk steps that lie inside their episode (None: all of them)."""
    mask = inputs.action_mask
    if mask is None:
        return None
    return mask.reshape(mask.shape[0], -1)[:, :chunk].float()


def masked_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [B, chunk, ...] over the chunk steps ``weights`` [B, chunk] marks valid."""
    if weights is None:
        return values.mean()
    w = weights.to(values.device, values.dtype).reshape(*weights.shape, *([1] * (values.ndim - 2)))
    w = w.expand_as(values)
    return (values * w).sum() / w.sum().clamp(min=1)
