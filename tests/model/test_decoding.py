"""The static-KV-cache decoder against transformers' own generate, eager and compiled."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from openvla.model.decoding import greedy_decode


def _lm(kv_heads: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                      intermediate_size=128, vocab_size=97, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _hf_greedy(lm: LlamaForCausalLM, embeds: torch.Tensor, mask: torch.Tensor | None, n: int) -> torch.Tensor:
    out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                      do_sample=False, pad_token_id=0)
    return out[:, -n:]


def test_greedy_decode_matches_transformers_generate_with_grouped_kv_heads():
    lm = _lm(kv_heads=2)
    embeds = torch.randn(3, 11, 64)
    with torch.inference_mode():
        assert torch.equal(greedy_decode(lm, embeds, None, 9), _hf_greedy(lm, embeds, None, 9))


def test_padded_rows_decode_as_if_alone():
    """Padding right after the first token (where the VLA puts it) must not change a row's ids."""
    lm = _lm(kv_heads=4)
    short, long_ = torch.randn(1, 6, 64), torch.randn(1, 10, 64)
    pad = torch.randn(1, 4, 64)  # whatever sits in padding must be invisible
    batch = torch.cat([torch.cat([short[:, :1], pad, short[:, 1:]], dim=1), long_])
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 1:5] = 0
    with torch.inference_mode():
        rows = greedy_decode(lm, batch, mask, 7)
        assert torch.equal(rows[0], greedy_decode(lm, short, None, 7)[0])
        assert torch.equal(rows[1], greedy_decode(lm, long_, None, 7)[0])


def test_compiled_decoding_emits_the_eager_ids():
    lm = _lm()
    embeds = torch.randn(2, 8, 64)
    with torch.inference_mode():
        eager = greedy_decode(lm, embeds, None, 5)
        assert torch.equal(greedy_decode(lm, embeds, None, 5, compile=True), eager)
        shorter = embeds[:, :6]  # another prompt length reuses the dynamic prefill graph
        assert torch.equal(greedy_decode(lm, shorter, None, 5, compile=True), greedy_decode(lm, shorter, None, 5))
