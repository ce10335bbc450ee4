"""Quantisation for inference: int8 dynamic quantisation of the language model (CPU)."""

from __future__ import annotations

import torch
from torch import nn


def quantize_int8(vla: nn.Module) -> nn.Module:
    """Replace the language model's Linear layers with int8 dynamically quantised ones (CPU inference).

    Weights are stored as int8 with per-tensor scales; activations are quantised on the fly. The vision tower
    and projector stay float32: they run once per call, the LM runs once per token.
    """
    from torch.ao.quantization import quantize_dynamic

    quantize_dynamic(vla.language_model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return vla
