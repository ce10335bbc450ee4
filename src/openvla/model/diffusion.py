"""DDIM for OFT's diffusion action head: the squared-cosine noise schedule, noising, the deterministic
(eta = 0) reverse step with the clean estimate clipped to [-1, 1], and the sinusoidal timestep encoding.
The same arithmetic as diffusers' ``DDIMScheduler(beta_schedule="squaredcos_cap_v2")`` with its defaults
(epsilon prediction, ``clip_sample``, ``set_alpha_to_one``, "leading" timestep spacing)."""

from __future__ import annotations

import math

import torch


class DDIMSchedule:
    """Noise levels of ``train_steps`` diffusion timesteps and the sampler over a subset of them."""

    def __init__(self, train_steps: int = 50) -> None:
        if train_steps < 1:
            raise ValueError(f"diffusion needs at least one timestep, got {train_steps}")
        self.train_steps = train_steps

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / train_steps) / alpha_bar(i / train_steps), 0.999)
                 for i in range(train_steps)]
        self.alphas_cumprod = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0).float()

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise, with ``t`` [B] one timestep per row."""
        a = self.alphas_cumprod.to(clean.device)[t].reshape(-1, *([1] * (clean.ndim - 1)))
        return a.sqrt() * clean + (1 - a).sqrt() * noise

    def timesteps(self, steps: int) -> list[int]:
        """The ``steps`` timesteps the sampler visits, noisiest first."""
        if not 1 <= steps <= self.train_steps:
            raise ValueError(f"inference steps must be in [1, {self.train_steps}], got {steps}")
        ratio = self.train_steps // steps
        return [i * ratio for i in range(steps)][::-1]

    def step(self, noise_pred: torch.Tensor, t: int, steps: int, sample: torch.Tensor) -> torch.Tensor:
        """One reverse step from timestep ``t`` to the next one visited (eta = 0: deterministic)."""
        prev = t - self.train_steps // steps
        a_t = self.alphas_cumprod[t].item()
        a_prev = self.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        clean = ((sample - math.sqrt(1 - a_t) * noise_pred) / math.sqrt(a_t)).clamp(-1, 1)
        return math.sqrt(a_prev) * clean + math.sqrt(1 - a_prev) * noise_pred


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encoding [B, dim] of integer timesteps [B]: sin || cos of t * exp(-log(10000) k / (half - 1))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
