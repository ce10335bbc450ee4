"""Module calls without ``nn.Module.__call__``'s per-call machinery, for the inference hot paths: at small
sizes a decode step makes a few hundred calls and the wrapper costs about a quarter of each small matmul."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: a plain ``nn.Linear`` through ``F.linear``; any other module (LoRA, quantised) is called."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    return module(x)


def layer_norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: a plain ``nn.LayerNorm`` through ``F.layer_norm``; any other module is called."""
    if type(module) is nn.LayerNorm:
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    return module(x)
