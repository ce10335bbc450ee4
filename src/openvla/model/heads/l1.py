"""OFT's L1 regression head: the final hidden states of one timestep's D action slots, concatenated, through an
MLP-ResNet -> D continuous actions; one bidirectional pass per chunk, trained with L1."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from openvla.model.heads.base import ActionHead, HeadOutput, masked_mean, valid_steps
from openvla.model.modules import MLPResNet

if TYPE_CHECKING:
    from openvla.config import VLAConfig
    from openvla.model.vla import VLA, ModelInputs


class L1Head(ActionHead):
    name = "l1"

    def __init__(self, config: VLAConfig, num_blocks: int = 2) -> None:
        super().__init__(config)
        self.action_dim = config.action_dim
        self.model = MLPResNet(num_blocks, config.llm_dim * config.action_dim, config.llm_dim, config.action_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Slot states [B, chunk * D, H] -> [B, chunk, D]."""
        b, n, h = hidden.shape
        return self.model(hidden.reshape(b, n // self.action_dim, self.action_dim * h))

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        actions = require_actions(self, inputs)
        pred = self(vla.slot_states_train(inputs))
        loss = masked_mean((pred.float() - actions.to(pred.device).float()).abs(),
                           valid_steps(inputs, pred.shape[1]))
        return HeadOutput(loss=loss, metrics={"action_l1": loss.detach()}, predicted_actions=pred)

    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        hidden = vla.slot_states(inputs, vla.config.action_slots)
        return self(hidden).float().clamp(-1, 1).cpu().numpy()


def require_actions(head: ActionHead, inputs: ModelInputs) -> torch.Tensor:
    if inputs.labels is None or inputs.actions is None:
        raise ValueError(f"the {head.name} action head trains on labels (to find the action slots) and "
                         "continuous `actions` [B, chunk, D]")
    return inputs.actions
