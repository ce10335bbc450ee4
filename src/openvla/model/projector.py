"""Projectors from fused vision features to the language model's width."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """``gelu-mlp``: fc1 -> GELU -> fc2; ``fused-gelu-mlp``: fc1 (4x) -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, kind: str, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.fc3 = None
        elif kind == "fused-gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            raise ValueError(f"unknown projector {kind!r}; valid: ['gelu-mlp', 'fused-gelu-mlp']")
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(features)))
        return self.fc3(self.act(x)) if self.fc3 is not None else x
