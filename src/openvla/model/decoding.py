"""Greedy decoding with a static KV cache, driving a transformers decoder's layers directly.

Action decoding is short (7 tokens for OpenVLA) and, at the small sizes we train on a CPU, each step costs
far less than the bookkeeping around it in ``generate`` and ``LlamaModel.forward`` (cache objects, mask
building, output classes). Here the same decoder layers run with one preallocated cache and masks built once
per call; every step has the same shapes, which is what ``torch.compile`` and CUDA graphs need.
Works for decoders laid out like Llama (``model.embed_tokens``, ``model.layers``, ``model.norm``,
``model.rotary_emb``, ``lm_head``): Llama, Mistral, Qwen2.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


class StaticKVCache:
    """Keys and values for every layer in buffers of a fixed length; the subset of transformers' ``Cache``
    API that decoder layers call (``update``). Attention always spans the whole buffer; the mask hides what
    is not written yet."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, batch, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = torch.arange(0, device=device)  # buffer positions the next update writes

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *_: Any, **__: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        # a tensor index keeps the write free of Python ints, so a compiled step never recompiles
        self.keys[layer_idx].index_copy_(2, self.slots, key)
        self.values[layer_idx].index_copy_(2, self.slots, value)
        return self.keys[layer_idx], self.values[layer_idx]


def supports_static_decoding(lm: nn.Module) -> bool:
    """Whether ``lm`` has the Llama-style layout ``greedy_decode`` drives."""
    base = getattr(lm, "model", None)
    return all(hasattr(base, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")) and hasattr(
        lm, "lm_head")


def decode_step(lm: nn.Module, cache: StaticKVCache, hidden: torch.Tensor, positions: torch.Tensor,
                attn: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Run ``hidden`` [B, Q, H] through every layer, writing its keys/values at ``slots``; the greedy
    next id of each row [B]."""
    base = lm.model
    cache.slots = slots
    rotary = base.rotary_emb(hidden, positions)
    for layer in base.layers:
        hidden = layer(hidden, attention_mask=attn, position_ids=positions, past_key_values=cache,
                       position_embeddings=rotary)
        if isinstance(hidden, tuple):  # transformers < 4.54 returns (hidden, ...)
            hidden = hidden[0]
    return lm.lm_head(base.norm(hidden[:, -1])).argmax(-1)


@functools.cache
def compiled_decode_step(dynamic: bool) -> Any:
    """``decode_step`` through ``torch.compile``. Decode steps all have the same shapes (static: compiled once
    per batch size and buffer length); the prefill's length follows the prompt (dynamic shapes)."""
    return torch.compile(decode_step, dynamic=dynamic)


@torch.inference_mode()
def greedy_decode(lm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, num_tokens: int,
                  compile: bool = False) -> torch.Tensor:
    """Prefill ``embeds`` [B, L, H] (``mask`` [B, L]: 1 = real token, may be None) and greedily emit
    ``num_tokens`` ids per row: [B, num_tokens]. Rows see only their own unmasked tokens."""
    base, cfg = lm.model, lm.config
    b, length, _ = embeds.shape
    device = embeds.device
    total = length + num_tokens - 1  # the last token is emitted, never fed back
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = StaticKVCache(len(base.layers), b, cfg.num_key_value_heads, head_dim, total, embeds.dtype, device)
    real = torch.ones(b, total, dtype=torch.bool, device=device)
    if mask is not None:
        real[:, :length] = mask.bool()
    positions = real.long().cumsum(-1) - 1  # padding (after BOS) takes no position
    causal = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    allowed = causal[None, None] & real[:, None, None, :]  # [B, 1, query, key]
    slots = torch.arange(total, device=device)

    prefill = compiled_decode_step(True) if compile else decode_step
    token = prefill(lm, cache, embeds, positions[:, :length], allowed[:, :, :length], slots[:length])
    tokens = [token]
    step = compiled_decode_step(False) if compile else decode_step
    for i in range(length, total):
        hidden = base.embed_tokens(token[:, None])
        token = step(lm, cache, hidden, positions[:, i:i + 1], allowed[:, :, i:i + 1], slots[i:i + 1])
        tokens.append(token)
    return torch.stack(tokens, dim=1)
