"""OFT's diffusion head: the noisy action chunk sits in the slots (one projected token per scalar), a timestep
token follows the prefix, the L1 head's network predicts the noise; DDIM over ``diffusion_steps`` passes from one
fixed-seed noise at inference, so the same inputs give the same actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from openvla.model.diffusion import DDIMSchedule, timestep_embedding
from openvla.model.heads.base import HeadOutput, fixed_noise, masked_mean, valid_steps
from openvla.model.heads.l1 import L1Head, require_actions
from openvla.model.modules import NoisyActionProjector

if TYPE_CHECKING:
    from openvla.config import VLAConfig
    from openvla.model.vla import VLA, ModelInputs


class DiffusionHead(L1Head):
    name = "diffusion"
    extra_prefix_tokens = 1  # the timestep token

    def __init__(self, config: VLAConfig) -> None:
        super().__init__(config)
        self.noisy_action_projector = NoisyActionProjector(config.llm_dim)
        self.schedule = DDIMSchedule(config.diffusion_steps)
        self.steps = config.diffusion_steps

    @classmethod
    def check_config(cls, config: VLAConfig) -> None:
        super().check_config(config)
        if config.action_queries != "zeros":
            raise ValueError("the diffusion head puts the noisy actions in the slots; action_queries must be 'zeros'")

    @staticmethod
    def timestep_token(prefix: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The prefix with the sinusoidal encoding of ``timestep`` [B] appended as one more token."""
        token = timestep_embedding(timestep, prefix.shape[-1]).to(prefix.dtype)
        return torch.cat([prefix, token[:, None]], dim=1)

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        clean = require_actions(self, inputs).float()
        clean = clean.to(vla.device)
        timestep = torch.randint(0, self.steps, (clean.shape[0],), device=clean.device)
        noise = torch.randn_like(clean)
        noisy = self.schedule.add_noise(clean, noise, timestep)
        dtype = self.noisy_action_projector.fc1.weight.dtype
        hidden = vla.slot_states_train(inputs, slot_inputs=self.noisy_action_projector(noisy.to(dtype)),
                                       extend_prefix=lambda p: self.timestep_token(p, timestep))
        pred = self(hidden)
        loss = masked_mean((pred.float() - noise).pow(2), valid_steps(inputs, pred.shape[1]))
        return HeadOutput(loss=loss, metrics={"noise_mse": loss.detach()})

    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        cfg = vla.config
        device = vla.device
        b = inputs.input_ids.shape[0]
        sample = fixed_noise(vla, b)
        run = vla.parallel_runner(inputs, cfg.action_slots)
        for t in self.schedule.timesteps(self.steps):
            timestep = torch.full((b,), t, device=device)
            hidden = run(self.noisy_action_projector(sample.to(run.dtype)),
                         lambda p, ts=timestep: self.timestep_token(p, ts))
            sample = self.schedule.step(self(hidden).float(), t, self.steps, sample)
        return sample.clamp(-1, 1).cpu().numpy()
