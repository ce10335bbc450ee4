"""Quantised models (int8 dynamic, bitsandbytes 8-bit and 4-bit) keep a fitted model's actions within one
bin of float32."""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import pytest
import torch

from openvla import VLA, get_preset
from openvla.model.quantize import quantize

ONE_BIN = 2 / 255  # the reported tolerance, in normalised action space


@pytest.fixture(scope="module")
def fitted():
    """A tiny model fitted to four (image, instruction) -> action samples."""
    torch.manual_seed(0)
    vla = VLA.create(get_preset("tiny"), ["open the drawer", "push the button"], seed=0)
    tok = vla.action_tokenizer
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), t, rng.uniform(-0.9, 0.9, 7))
               for t in ("open the drawer", "push the button") for _ in range(2)]
    rows = [vla.processor.tokenize(t) + [vla.config.empty_token_id] + tok.encode(a).tolist() + [2]
            for _, t, a in samples]
    width = max(map(len, rows))
    pad = vla.config.llm["pad_token_id"]
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    labels = ids.clone()
    for i, r in enumerate(rows):
        labels[i, : len(r) - 8] = -100
    labels[ids == pad] = -100
    pixels = torch.stack([vla.processor.preprocess_image(s[0]) for s in samples])
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    for _ in range(60):
        loss = vla(input_ids=ids, pixel_values=pixels, attention_mask=(ids != pad).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vla.eval()
    images, texts = [s[0] for s in samples], [s[1] for s in samples]
    reference = vla.predict_action(image=images, instruction=texts)
    np.testing.assert_allclose(reference, np.stack([s[2] for s in samples]), atol=ONE_BIN)  # it was fitted
    return vla, images, texts, reference


# (method, layer class in the LM, tolerance in normalised action units)
CASES = [("int8", torch.ao.nn.quantized.dynamic.Linear, ONE_BIN), ("bnb8", "Linear8bitLt", ONE_BIN),
         ("bnb4", "Linear4bit", ONE_BIN)]


@pytest.mark.parametrize(("method", "layer", "tolerance"), CASES, ids=[c[0] for c in CASES])
def test_quantised_actions_stay_close_to_float32(fitted, method, layer, tolerance):
    vla, images, texts, reference = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for quantized tensors
        quantized = quantize(copy.deepcopy(vla), method)
        got = quantized.predict_action(image=images, instruction=texts)
    print(f"{method}: max action error {np.abs(got - reference).max():.4f} (normalised units)")
    assert np.abs(got - reference).max() <= tolerance + 1e-9
    up = quantized.language_model.model.layers[0].mlp.up_proj
    assert isinstance(up, layer) if isinstance(layer, type) else type(up).__name__ == layer
    assert isinstance(quantized.language_model.lm_head, torch.nn.Linear)


@pytest.mark.parametrize("method", ["int8", "bnb8", "bnb4"])
def test_quantising_a_bf16_model_keeps_the_float32_actions(fitted, method):
    """A bf16 checkpoint quantises directly (int8 used to fail: 'expected scalar type Float but found BFloat16');
    int8 converts layer by layer, so only the LM's small leftovers become float32, never the whole model."""
    vla, images, texts, reference = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize(copy.deepcopy(vla).to(torch.bfloat16), method)
        got = quantized.predict_action(image=images, instruction=texts)
    assert np.abs(got - reference).max() <= ONE_BIN + 1e-9
    assert quantized.projector.fc1.weight.dtype == torch.bfloat16  # the vision side stays as loaded
    lm_dtype = torch.float32 if method == "int8" else torch.bfloat16
    assert quantized.language_model.lm_head.weight.dtype == lm_dtype


def _rss_file_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux-only")
def test_dropping_mapped_pages_frees_memory_not_data(tmp_path):
    """What lets int8/bnb quantisation of a memory-mapped 7B stay small: the replaced weights' pages go back."""
    from safetensors.torch import load_file, save_file

    from openvla.model.quantize import drop_mapped_pages

    weights = torch.randn(16 << 20)  # 64 MB
    save_file({"w": weights}, str(tmp_path / "w.safetensors"))
    mapped = load_file(str(tmp_path / "w.safetensors"))["w"]
    assert torch.equal(mapped, weights)  # reads every page
    before = _rss_file_mb()
    drop_mapped_pages(mapped)
    assert before - _rss_file_mb() > 48
    assert torch.equal(mapped, weights)  # dropped pages are read back from the file
    anonymous = weights.clone()
    drop_mapped_pages(anonymous)  # not a file mapping: left alone
    assert torch.equal(anonymous, weights)
