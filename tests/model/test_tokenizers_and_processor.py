"""Action tokenizer, prompt, text tokenizer and image processor behave as the reference specifies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from openvla import get_preset
from openvla.model.action_tokenizer import ActionTokenizer
from openvla.model.processor import VLAProcessor, build_prompt
from openvla.model.text_tokenizer import EMPTY_TOKEN_ID, train_tokenizer


def test_action_token_worked_examples():
    tok = ActionTokenizer(32000)
    assert tok.begin_idx == 31743
    assert tok.encode(np.array([0.0, 1.0, -1.0, 5.0])).tolist() == [31872, 31744, 31999, 31744]
    decoded = tok.decode(torch.tensor([31872, 31744, 31999]))
    np.testing.assert_allclose(decoded, [0.0, 0.996078431372549, -0.996078431372549], atol=1e-12)


def test_action_roundtrip_within_half_a_bin():
    tok = ActionTokenizer(32000)
    actions = np.random.default_rng(0).uniform(-0.99, 0.99, size=(1000, 7))
    assert np.abs(tok.decode(tok.encode(actions)) - actions).max() <= 2 / 255 + 1e-9


def test_prompt_format():
    assert build_prompt("Pick Up The Cup") == "In: What action should the robot take to pick up the cup?\nOut:"


def test_trained_tokenizer_layout():
    tok = train_tokenizer(["open the drawer"], vocab_size=768)
    assert len(tok) == 769 and tok.pad_token_id == 768
    assert tok.convert_ids_to_tokens([1, 2, EMPTY_TOKEN_ID, 512, 767]) == ["<s>", "</s>", "▁", "<act_0>", "<act_255>"]
    ids = tok(build_prompt("open the drawer"))["input_ids"]
    assert ids[0] == 1 and all(i < 512 for i in ids)
    assert tok.decode(ids, skip_special_tokens=True) == build_prompt("open the drawer")


@pytest.mark.parametrize("strategy", ["resize-naive", "letterbox", "resize-crop"])
def test_processor_strategies_shape_and_numpy_equals_pil(strategy):
    cfg = get_preset("tiny")
    cfg.image_resize_strategy = strategy
    proc = VLAProcessor(cfg)
    arr = np.random.default_rng(1).integers(0, 255, (60, 100, 3), dtype=np.uint8)
    out = proc.preprocess_image(arr)
    assert out.shape == (6, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, proc.preprocess_image(Image.fromarray(arr)))


def test_letterbox_pads_both_backbones_with_the_last_backbones_fill():
    """The reference pads once, with SigLIP's grey (127) for DINOv2 too: its per-backbone loop overwrites it."""
    cfg = get_preset("tiny")
    cfg.image_resize_strategy = "letterbox"
    out = VLAProcessor(cfg).preprocess_image(np.zeros((20, 200, 3), dtype=np.uint8))
    means = [m for v in cfg.vision for m in v.mean]
    stds = [s for v in cfg.vision for s in v.std]
    expected = torch.tensor([(np.float32(127) / np.float32(255) - m) / s for m, s in zip(means, stds, strict=True)],
                            dtype=torch.float32)
    torch.testing.assert_close(out[:, 0, 112], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                 np.zeros((8, 8, 4), np.uint8), "not an image"])
def test_bad_images_are_clear_errors(tiny_vla, bad):
    with pytest.raises(ValueError, match="uint8 HxWx3|PIL.Image"):
        tiny_vla.predict_action(image=bad, instruction="open the drawer")


def test_mismatched_batch_is_a_clear_error(tiny_vla):
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="2 images for 3 instructions"):
        tiny_vla.predict_action(image=[img, img], instruction=["a", "b", "c"])
