"""OpenVLA-OFT's building blocks: the MLP-ResNet the continuous heads use, the proprio and noisy-action
projectors, and FiLM."""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """Pre-LayerNorm residual block: x + ReLU(Linear(LN(x)))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LN -> Linear -> ReLU -> N residual blocks -> LN -> Linear (OFT's ``MLPResNet``)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class ProprioProjector(nn.Module):
    """Proprio vector -> one LM token: Linear -> GELU -> Linear."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class FiLMBlock(nn.Module):
    """gamma and beta of one ViT block from the language embedding: two Linear(llm_dim -> width)."""

    def __init__(self, llm_dim: int, width: int) -> None:
        super().__init__()
        self.scale = nn.Linear(llm_dim, width)
        self.shift = nn.Linear(llm_dim, width)

    def forward(self, language: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale(language), self.shift(language)


class VisionFiLM(nn.Module):
    """OFT+ FiLM: one ``FiLMBlock`` per ViT block that runs, for each ViT of the tower."""

    def __init__(self, llm_dim: int, vits: list[tuple[int, int]]) -> None:
        """``vits``: (width, blocks run) of each ViT."""
        super().__init__()
        self.vits = nn.ModuleList(nn.ModuleList(FiLMBlock(llm_dim, width) for _ in range(blocks))
                                  for width, blocks in vits)

    def forward(self, language: torch.Tensor) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """[B, llm_dim] -> (gamma, beta) [B, width] for each block of each ViT."""
        return [[block(language) for block in blocks] for blocks in self.vits]


class NoisyActionProjector(nn.Module):
    """Each noisy scalar action of the chunk -> one LM input embedding: Linear(1 -> H) -> GELU -> Linear."""

    def __init__(self, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1, llm_dim)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """[B, chunk, D] -> [B, chunk * D, H]."""
        return self.fc2(self.act_fn(self.fc1(noisy.reshape(noisy.shape[0], -1, 1))))
