"""pi0's flow-matching head on our backbone: the noisy action chunk sits in the slots (one token per scalar) and
the L1 head's network predicts the velocity that carries noise to actions; Euler integration over ``flow_steps``
passes from one fixed-seed noise at inference, so the same inputs give the same actions, batched or not.

Convention (openpi's): ``x_t = t * noise + (1 - t) * actions`` with t in (0, 1], velocity target
``u = noise - actions``; sampling starts at t = 1 (pure noise) and steps ``x <- x - v / flow_steps`` down to t = 0.
Training draws t from openpi's Beta(1.5, 1) (more weight on noisy times), scaled into [0.001, 1].

Time conditioning follows pi0 (not pi0.5's adaRMS): each slot's input is an MLP of its projected noisy scalar
concatenated with the sinusoidal embedding of t, so every slot knows the time from the first layer; no extra
token. A tiny LM sees all slots at once, and a per-slot signal survives its few layers better than one token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from openvla.model.diffusion import timestep_embedding
from openvla.model.heads.base import HeadOutput, fixed_noise, masked_mean, valid_steps
from openvla.model.heads.l1 import L1Head, require_actions
from openvla.model.modules import NoisyActionProjector

if TYPE_CHECKING:
    from openvla.config import VLAConfig
    from openvla.model.vla import VLA, ModelInputs

TIME_SCALE = 1000.0  # t in [0, 1] -> the sinusoidal encoding's range of integer timesteps (as DDPM's 1000)


class ActionTimeProjector(nn.Module):
    """Noisy scalars [B, chunk, D] and times [B] -> slot inputs [B, chunk * D, H] (pi0's action-time MLP)."""

    def __init__(self, llm_dim: int) -> None:
        super().__init__()
        self.actions = NoisyActionProjector(llm_dim)
        self.mix = nn.Sequential(nn.Linear(2 * llm_dim, llm_dim), nn.SiLU(), nn.Linear(llm_dim, llm_dim))

    def forward(self, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.actions(noisy)
        time = timestep_embedding(t * TIME_SCALE, tokens.shape[-1]).to(tokens.dtype)
        return self.mix(torch.cat([tokens, time[:, None].expand_as(tokens)], dim=-1))


class FlowHead(L1Head):
    name = "flow"

    def __init__(self, config: VLAConfig) -> None:
        super().__init__(config)
        self.action_time_projector = ActionTimeProjector(config.llm_dim)
        self.steps = config.flow_steps

    @classmethod
    def check_config(cls, config: VLAConfig) -> None:
        super().check_config(config)
        if config.action_queries != "zeros":
            raise ValueError("the flow head puts the noisy actions in the slots; action_queries must be 'zeros'")
        if config.flow_steps < 1:
            raise ValueError(f"flow_steps must be >= 1, got {config.flow_steps}")

    def slot_inputs(self, noisy: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The slots' inputs for noisy chunks at times ``t`` [B]."""
        weight = self.action_time_projector.mix[0].weight.dtype
        return self.action_time_projector(noisy.to(weight), t.to(weight)).to(dtype)

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        actions = hold_last_valid(require_actions(self, inputs).float().to(vla.device), inputs.action_mask)
        b = actions.shape[0]
        t = torch.distributions.Beta(1.5, 1.0).sample((b,)).to(actions.device) * 0.999 + 0.001
        noise = torch.randn_like(actions)
        noisy = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        dtype = self.action_time_projector.mix[0].weight.dtype
        hidden = vla.slot_states_train(inputs, slot_inputs=self.slot_inputs(noisy, t, dtype))
        pred = self(hidden)
        loss = masked_mean((pred.float() - (noise - actions)).pow(2), valid_steps(inputs, pred.shape[1]))
        return HeadOutput(loss=loss, metrics={"velocity_mse": loss.detach()})

    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        cfg = vla.config
        device = vla.device
        b = inputs.input_ids.shape[0]
        x = fixed_noise(vla, b)
        run = vla.parallel_runner(inputs, cfg.action_slots)
        for i in range(self.steps):
            t = torch.full((b,), 1.0 - i / self.steps, device=device)
            velocity = self(run(self.slot_inputs(x, t, run.dtype))).float()
            x = x - velocity / self.steps
        return x.clamp(-1, 1).cpu().numpy()


def hold_last_valid(actions: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
    """Actions [B, chunk, D] with each step past the episode's end replaced by the last valid one (what the
    loader pads with), so padded values never reach a slot that other slots attend to."""
    if action_mask is None or bool(action_mask.all()):
        return actions
    valid = action_mask.to(actions.device).bool()
    steps = torch.arange(valid.shape[1], device=actions.device).expand_as(valid)
    last = torch.where(valid, steps, torch.zeros_like(steps)).cummax(dim=1).values  # latest valid step so far
    return actions.gather(1, last[..., None].expand_as(actions))
