"""The static-KV-cache decoder against transformers' own generate, eager and compiled."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from openvla.model.decoding import bidirectional_hidden, compiled, greedy_decode


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
        # OFT's parallel pass, compiled as VLA.compile_inference runs it (dynamic length, padding, last rows)
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[0, 1:3] = 0
        fast = compiled(bidirectional_hidden, True)
        for length in (8, 7):
            torch.testing.assert_close(fast(lm, embeds[:, :length], mask[:, :length], keep_last=4),
                                       bidirectional_hidden(lm, embeds[:, :length], mask[:, :length], keep_last=4))


def _qwen2() -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=97, max_position_embeddings=256)
    return Qwen2ForCausalLM(cfg).eval()


def test_qwen2_with_projection_biases_decodes_as_transformers_does():
    lm = _qwen2()
    with torch.no_grad():  # random init leaves biases at zero; make them matter
        for layer in lm.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    embeds = torch.randn(2, 9, 64)
    with torch.inference_mode():
        assert torch.equal(greedy_decode(lm, embeds, None, 6), _hf_greedy(lm, embeds, None, 6))


def test_bidirectional_pass_equals_transformers_with_a_full_mask():
    """OFT's parallel pass: every token sees every real token; padding is invisible and takes no position."""
    for lm in (_lm(kv_heads=2), _qwen2()):
        embeds = torch.randn(2, 10, 64)
        mask = torch.ones(2, 10, dtype=torch.long)
        mask[0, 1:4] = 0
        keys = mask.bool()[:, None, None, :].expand(2, 1, 10, 10)
        blocked = torch.zeros(2, 1, 10, 10).masked_fill(~keys, torch.finfo(torch.float32).min)
        with torch.inference_mode():
            ours = bidirectional_hidden(lm, embeds, mask)
            theirs = lm.model(inputs_embeds=embeds, attention_mask=blocked, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                              use_cache=False).last_hidden_state
        real = mask.bool()
        torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)
        # the final layer computing only the last tokens gives those tokens' states
        torch.testing.assert_close(bidirectional_hidden(lm, embeds, mask, keep_last=3), ours[:, -3:])
        # the padded row's real tokens are what the same tokens give alone
        alone = bidirectional_hidden(lm, torch.cat([embeds[:1, :1], embeds[:1, 4:]], dim=1), None)
        torch.testing.assert_close(ours[0, real[0]], alone[0], atol=1e-5, rtol=1e-5)


def test_sequences_longer_than_a_sliding_window_are_refused():
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=97, sliding_window=8)
    lm = MistralForCausalLM(cfg).eval()
    with torch.inference_mode():
        assert greedy_decode(lm, torch.randn(1, 4, 64), None, 5).shape == (1, 5)
        with pytest.raises(ValueError, match="sliding window of 8"):
            greedy_decode(lm, torch.randn(1, 6, 64), None, 5)
