"""Quantisation for inference: int8 dynamic (torch, CPU) and bitsandbytes 8-bit / 4-bit NF4 weights.

Only the language model's Linear layers are quantised: it runs once per token, the vision tower and projector
once per call. ``lm_head`` stays in full precision (as transformers does for bitsandbytes), so the argmax
over action bins is not decided by quantisation noise in the last layer.
"""

from __future__ import annotations

import torch
from torch import nn

METHODS = ("int8", "bnb8", "bnb4")


def quantize_int8(vla: nn.Module) -> nn.Module:
    """Replace the language model's Linear layers with int8 dynamically quantised ones (CPU inference).

    Weights are stored as int8 with per-tensor scales; activations are quantised on the fly.
    """
    from torch.ao.quantization import quantize_dynamic

    lm = vla.language_model
    body = getattr(lm, "model", lm)  # the decoder stack; lm_head stays float
    quantize_dynamic(body, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return vla


def _bnb_linear(bnb, linear: nn.Linear, bits: int, compute_dtype: torch.dtype) -> nn.Module:
    bias = linear.bias is not None
    if bits == 8:  # LLM.int8(): int8 weights, outlier features kept in 16 bit
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
                                  quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4")
    if bias:
        layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer


def quantize_bnb(vla: nn.Module, bits: int) -> nn.Module:
    """Swap the language model's Linear layers (not ``lm_head``) for bitsandbytes 8-bit or 4-bit NF4 ones,
    quantised where the model is (CUDA; recent bitsandbytes also runs on CPU). Needs the ``quant`` extra."""
    if bits not in (8, 4):
        raise ValueError(f"bitsandbytes quantisation takes 8 or 4 bits, got {bits}")
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ImportError("8-bit and 4-bit weights need bitsandbytes: pip install 'openvla[quant]'") from err
    lm = vla.language_model
    device = next(lm.parameters()).device
    compute_dtype = lm.get_input_embeddings().weight.dtype
    for parent in list(lm.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not getattr(lm, "lm_head", None):
                setattr(parent, name, _bnb_linear(bnb, child, bits, compute_dtype).to(device))
    return vla


def quantize(vla: nn.Module, method: str) -> nn.Module:
    """``int8`` (torch dynamic, CPU), ``bnb8`` (LLM.int8) or ``bnb4`` (NF4), in place."""
    if method == "int8":
        return quantize_int8(vla)
    if method in ("bnb8", "bnb4"):
        return quantize_bnb(vla, int(method[3:]))
    raise ValueError(f"unknown quantisation {method!r}; valid: {', '.join(METHODS)}")
