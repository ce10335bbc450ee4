"""Inference passes through a transformers decoder's own modules, without its per-call bookkeeping.

Action decoding is short (7 tokens for OpenVLA) and, at the sizes we train on a CPU, each step costs far less
than the machinery around it in ``generate`` and ``LlamaModel.forward`` (cache objects, mask building, output
classes, attention dispatch). Here each decoder layer is written out as the few tensor operations it is,
calling the layer's own projection modules (so LoRA-wrapped or quantised linears work unchanged), with one
preallocated KV cache, the rotary table and masks built once per call. Every decode step has the same shapes,
which is what ``torch.compile`` and CUDA graphs need.

Works for the decoders laid out like Llama (``model.embed_tokens``, ``model.layers``, ``model.norm``,
``model.rotary_emb``, ``lm_head``) whose layers are Llama, Mistral or Qwen2 layers (checked by class name).
Sliding-window attention is not applied: sequences longer than a model's window are refused.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openvla.model.ops import linear

SUPPORTED_LAYERS = ("LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer")


class StaticKVCache:
    """Keys and values for every layer in buffers of a fixed length. Attention always spans the whole buffer;
    the mask hides what is not written yet."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, batch, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int, slots: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``key``/``value`` [B, kv_heads, Q, head_dim] at buffer positions ``slots`` [Q]; the whole
        buffers. A tensor index keeps the write free of Python ints, so a compiled step never recompiles."""
        self.keys[layer].index_copy_(2, slots, key)
        self.values[layer].index_copy_(2, slots, value)
        return self.keys[layer], self.values[layer]


def supports_static_decoding(lm: nn.Module) -> bool:
    """Whether ``lm`` is a decoder ``run_layers`` can drive (Llama, Mistral, Qwen2 layout and layers)."""
    base = getattr(lm, "model", None)
    if not all(hasattr(base, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    return hasattr(lm, "lm_head") and all(type(layer).__name__ in SUPPORTED_LAYERS for layer in base.layers)


def check_window(lm: nn.Module, length: int) -> None:
    """Refuse sequences a sliding-window model would attend to differently than full attention does."""
    cfg = lm.config
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True) and length > window:
        raise ValueError(f"sequence of {length} tokens exceeds the model's sliding window of {window}; "
                         "sliding-window attention is not implemented for fast decoding")


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' RMSNorm: normalised in float32, scaled in the input dtype."""
    h = F.rms_norm(x.float(), x.shape[-1:], eps=norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def run_layers(lm: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
               cache: StaticKVCache | None = None, slots: torch.Tensor | None = None,
               keep_last: int | None = None) -> torch.Tensor:
    """``hidden`` [B, Q, H] through every decoder layer; the last layer's output, before the final norm.

    ``cos``/``sin`` [B, Q, head_dim] are the rotary tables at these tokens' positions; ``mask`` [B, 1, Q or 1,
    K] (bool, True = may attend) spans the cache buffer when ``cache`` is given (the new keys/values are
    written at ``slots`` [Q]), else the Q tokens themselves. With ``keep_last``, only the last tokens' outputs
    are computed in the final layer (the others' keys and values are all it needs from them).
    """
    b, q_len, _ = hidden.shape
    cos, sin = cos[:, None], sin[:, None]
    layers = lm.model.layers
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = rms_norm(layer.input_layernorm, hidden)
        q = linear(attn.q_proj, x).view(b, q_len, -1, attn.head_dim).transpose(1, 2)
        k = linear(attn.k_proj, x).view(b, q_len, -1, attn.head_dim).transpose(1, 2)
        v = linear(attn.v_proj, x).view(b, q_len, -1, attn.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, i, slots)
        if i == len(layers) - 1 and keep_last is not None and keep_last < q_len:
            q, hidden, q_len = q[:, :, -keep_last:], hidden[:, -keep_last:], keep_last
            mask = mask[:, :, -keep_last:] if mask.shape[2] > 1 else mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling,
                                             enable_gqa=q.shape[1] != k.shape[1])
        hidden = hidden + linear(attn.o_proj, out.transpose(1, 2).reshape(b, q_len, -1))
        x = rms_norm(layer.post_attention_layernorm, hidden)
        hidden = hidden + linear(mlp.down_proj, mlp.act_fn(linear(mlp.gate_proj, x)) * linear(mlp.up_proj, x))
    return hidden


def decode_step(lm: nn.Module, cache: StaticKVCache, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Run ``hidden`` [B, Q, H] through the decoder, caching its keys/values at ``slots``; the greedy next id
    of each row [B]."""
    hidden = run_layers(lm, hidden, cos, sin, mask, cache, slots, keep_last=1)
    return linear(lm.lm_head, rms_norm(lm.model.norm, hidden[:, -1])).argmax(-1)


def bidirectional_hidden(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None,
                         keep_last: int | None = None) -> torch.Tensor:
    """Final (normalised) hidden states [B, L, H] of one pass in which every token sees every real token
    (``mask`` [B, L]: 1 = real; padding takes no position): OFT's parallel decoding. ``keep_last``: only the
    last tokens' states [B, keep_last, H], computed alone in the final layer."""
    b, length, _ = embeds.shape
    check_window(lm, length)
    real = torch.ones(b, length, dtype=torch.bool, device=embeds.device) if mask is None else mask.bool()
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    cos, sin = lm.model.rotary_emb(embeds, positions)
    hidden = run_layers(lm, embeds, cos, sin, real[:, None, None, :], keep_last=keep_last)
    return rms_norm(lm.model.norm, hidden)


@functools.cache
def compiled(fn: Any, dynamic: bool) -> Any:
    """``fn`` through ``torch.compile``, once per function and shape policy. Decode steps all have the same
    shapes (static: compiled once per batch size and buffer length) and run with a C++ wrapper around the
    generated kernels, which saves about a quarter of a small step on a CPU; prefills and parallel passes
    follow the prompt's length (dynamic shapes)."""
    return torch.compile(fn, dynamic=dynamic, options=None if dynamic else {"cpp_wrapper": True})


@torch.inference_mode()
def greedy_decode(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, num_tokens: int,
                  compile: bool = False, stop_id: int | None = None) -> torch.Tensor:
    """Prefill ``embeds`` [B, L, H] (``mask`` [B, L]: 1 = real token, may be None) and greedily emit
    ``num_tokens`` ids per row: [B, num_tokens]. Rows see only their own unmasked tokens. With ``stop_id``,
    decoding ends once every row has emitted it: [B, n <= num_tokens]."""
    base, cfg = lm.model, lm.config
    b, length, _ = embeds.shape
    device = embeds.device
    total = length + num_tokens - 1  # the last token is emitted, never fed back
    check_window(lm, total)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = StaticKVCache(len(base.layers), b, cfg.num_key_value_heads, head_dim, total, embeds.dtype, device)
    real = torch.ones(b, total, dtype=torch.bool, device=device)
    if mask is not None:
        real[:, :length] = mask.bool()
    positions = real.long().cumsum(-1) - 1  # padding (after BOS) takes no position
    cos, sin = base.rotary_emb(embeds, positions.clamp(min=0))
    causal = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    allowed = causal[None, None] & real[:, None, None, :]  # [B, 1, query, key]
    slots = torch.arange(total, device=device)

    prefill = compiled(decode_step, True) if compile else decode_step
    token = prefill(lm, cache, embeds, cos[:, :length], sin[:, :length], allowed[:, :, :length], slots[:length])
    tokens = [token]
    stopped = token == (-1 if stop_id is None else stop_id)
    step = compiled(decode_step, False) if compile else decode_step
    for i in range(length, total):
        if stop_id is not None and bool(stopped.all()):  # one sync per token: only when asked to stop
            break
        hidden = base.embed_tokens(token[:, None])
        token = step(lm, cache, hidden, cos[:, i:i + 1], sin[:, i:i + 1], allowed[:, :, i:i + 1], slots[i:i + 1])
        tokens.append(token)
        stopped |= token == (-1 if stop_id is None else stop_id)
    return torch.stack(tokens, dim=1)
