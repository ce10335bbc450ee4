"""Quantisation for inference: int8 dynamic (torch, CPU) and bitsandbytes 8-bit / 4-bit NF4 weights.

Only the language model's Linear layers are quantised: it runs once per token, the vision tower and projector
once per call. ``lm_head`` stays in full precision (as transformers does for bitsandbytes), so the argmax
over action bins is not decided by quantisation noise in the last layer.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch
from torch import nn

METHODS = ("int8", "bnb8", "bnb4")


def quantize_int8(vla: nn.Module) -> nn.Module:
    """Replace the language model's Linear layers with int8 dynamically quantised ones (CPU inference).

    Weights are stored as int8 with per-tensor scales; activations are quantised on the fly, from float32, so
    the rest of the language model (norms, embeddings, ``lm_head``) runs in float32. Layers are converted one
    at a time: a bf16 model never has a float32 copy of its weights.
    """
    lm = vla.language_model
    body = getattr(lm, "model", lm)  # the decoder stack; lm_head stays float
    _swap_linears(body, _int8_linear, skip=None)
    for module in lm.modules():  # what is left: norms, embeddings, lm_head
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != torch.float32:
                old = param.data
                param.data = old.float()
                drop_mapped_pages(old)
    return vla


def _int8_linear(linear: nn.Linear) -> nn.Module:
    """One Linear -> torch's dynamic int8 Linear, through a float32 copy of this layer only."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import default_dynamic_qconfig

    bias = linear.bias is not None
    tmp = nn.Linear(linear.in_features, linear.out_features, bias=bias, device="meta")
    tmp.weight = nn.Parameter(linear.weight.detach().float(), requires_grad=False)
    if bias:
        tmp.bias = nn.Parameter(linear.bias.detach().float(), requires_grad=False)
    tmp.qconfig = default_dynamic_qconfig
    return DynamicLinear.from_float(tmp)


def _bnb_linear(bnb, linear: nn.Linear, bits: int, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    bias = linear.bias is not None
    if bits == 8:  # LLM.int8(): int8 weights, outlier features kept in 16 bit
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    device="meta")
        layer.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
                                  quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4")
    if bias:
        layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to(device)


def quantize_bnb(vla: nn.Module, bits: int) -> nn.Module:
    """Swap the language model's Linear layers (not ``lm_head``) for bitsandbytes 8-bit or 4-bit NF4 ones,
    quantised one at a time where the model is (CUDA; recent bitsandbytes also runs on CPU), computing in the
    model's dtype. Also the frozen base of QLoRA training. Needs the ``quant`` extra."""
    if bits not in (8, 4):
        raise ValueError(f"bitsandbytes quantisation takes 8 or 4 bits, got {bits}")
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ImportError("8-bit and 4-bit weights need bitsandbytes: pip install 'openvla[quant]'") from err
    lm = vla.language_model
    device = next(lm.parameters()).device
    compute_dtype = lm.get_input_embeddings().weight.dtype
    _swap_linears(lm, lambda linear: _bnb_linear(bnb, linear, bits, compute_dtype, device),
                  skip=getattr(lm, "lm_head", None))
    return vla


def _swap_linears(root: nn.Module, convert, skip: nn.Module | None) -> None:
    """Replace every plain nn.Linear under ``root`` (but ``skip``) by ``convert(linear)``, one at a time, giving
    back the memory of each original as it goes."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child is not skip:
                setattr(parent, name, convert(child))
                drop_mapped_pages(child.weight)


def drop_mapped_pages(tensor: torch.Tensor) -> None:
    """Give back the resident pages of a tensor that lives in a memory-mapped checkpoint file and is no longer
    used (Linux; elsewhere nothing happens). Pages are file-backed, so this frees memory, never data: whole
    pages inside the tensor only (neighbours untouched), re-read from the file if anything touches them again.
    Without it, a model loaded memory-mapped keeps every page it ever read resident until the file is closed."""
    if sys.platform != "linux" or tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or not _in_file_mapping(start, end):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # MADV_DONTNEED


def _in_file_mapping(start: int, end: int) -> bool:
    """Whether [start, end) lies in one mapping of a file (not anonymous memory, whose pages would be lost)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= start and end <= hi:
                return len(fields) >= 6 and fields[4] != "0" and not fields[5].startswith("[")
    return False


def quantize(vla: nn.Module, method: str) -> nn.Module:
    """``int8`` (torch dynamic, CPU), ``bnb8`` (LLM.int8) or ``bnb4`` (NF4), in place."""
    if method == "int8":
        return quantize_int8(vla)
    if method in ("bnb8", "bnb4"):
        return quantize_bnb(vla, int(method[3:]))
    raise ValueError(f"unknown quantisation {method!r}; valid: {', '.join(METHODS)}")
