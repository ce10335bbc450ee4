"""Quantisation for inference: int8 dynamic (CPU) and bitsandbytes 8/4-bit loading (GPU)."""

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


def bitsandbytes_config(bits: int):
    """A transformers BitsAndBytesConfig for 8- or 4-bit (nf4, bf16 compute) LM weights on a GPU."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise RuntimeError("8/4-bit loading needs a CUDA GPU and `pip install bitsandbytes`") from err
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    raise ValueError(f"bits must be 8 or 4, got {bits}")
