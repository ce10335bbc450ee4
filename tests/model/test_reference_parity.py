"""Loading the reference-made tiny checkpoint reproduces every tensor the reference produced."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from openvla import VLA


def _run_case(vla, expected, directory, case, i):
    """Every tensor from the PNG to the actions, against what the reference produced."""
    image = Image.open(directory / case["image"])
    pixels = vla.processor.preprocess_image(image)[None]
    torch.testing.assert_close(pixels, expected[f"case{i}.pixel_values"], atol=1e-5, rtol=0)
    with torch.no_grad():
        feats = vla.vision_backbone(pixels)
        torch.testing.assert_close(feats, expected[f"case{i}.vision_features"], atol=1e-4, rtol=0)
        torch.testing.assert_close(vla.projector(feats), expected[f"case{i}.projected"], atol=1e-4, rtol=0)
    ids, mask = vla.pack_prompts([case["prompt_ids"]])
    assert vla.generate_action_ids(ids, pixels, mask, 7)[0].tolist() == expected[f"case{i}.generated_ids"].tolist()
    keys = sorted({k.split(".")[1] for k in expected if k.startswith(f"case{i}.") and k.endswith(".actions")})
    assert keys
    for key in keys:
        action = vla.predict_action(pixel_values=pixels, input_ids=torch.tensor([case["prompt_ids"]]),
                                    unnorm_key=key)
        np.testing.assert_array_equal(action, expected[f"case{i}.{key}.actions"].numpy())
    train_ids = expected[f"case{i}.train_input_ids"][None]
    labels = train_ids.clone()
    labels[:, : len(case["prompt_ids"]) + 1] = -100  # prompt and the empty token
    with torch.no_grad():
        out = vla(input_ids=train_ids, pixel_values=pixels, labels=labels)
    torch.testing.assert_close(out.loss.reshape(1), expected[f"case{i}.train_loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(out.logits[0, -9:], expected[f"case{i}.train_logits_tail"], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def letterbox(fixtures_dir):
    directory = fixtures_dir / "openvla-tiny-letterbox"
    return (directory, VLA.from_pretrained(directory), load_file(str(directory / "expected.safetensors")),
            json.loads((directory / "fixture.json").read_text())["cases"])


@pytest.mark.parametrize("i", [0, 1, 2])
def test_letterbox_fixture_matches_end_to_end_from_its_pngs(letterbox, i):
    """Reference-made, letterbox (odd padding differences included), sharded, GQA: ids and actions exact."""
    directory, vla, expected, cases = letterbox
    assert vla.config.image_resize_strategy == "letterbox" and vla.config.frame_resize is None
    _run_case(vla, expected, directory, cases[i], i)


@pytest.fixture(scope="module")
def ref(tiny_reference_dir):
    vla = VLA.from_pretrained(tiny_reference_dir)
    expected = load_file(str(tiny_reference_dir / "expected.safetensors"))
    cases = json.loads((tiny_reference_dir / "fixture.json").read_text())["cases"]
    return vla, expected, cases


@pytest.mark.parametrize("i", [0, 1, 2])
def test_every_tensor_matches_reference(ref, tiny_reference_dir, i):
    vla, exp, cases = ref
    _run_case(vla, exp, tiny_reference_dir, cases[i], i)


def test_batched_prediction_equals_reference_rows(ref, tiny_reference_dir):
    """Prompts of different lengths in one batch: each row still gives the reference's action."""
    vla, exp, cases = ref
    pixels = torch.cat([exp[f"case{i}.pixel_values"] for i in range(3)])
    prompts = [c["prompt_ids"] for c in cases]
    width = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])  # right-padded, as a collator would
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    actions = vla.predict_action(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    assert actions.shape == (3, 7)
    for i in range(3):
        np.testing.assert_array_equal(actions[i], exp[f"case{i}.tiny_sim.actions"].numpy())


def test_prompt_already_ending_in_empty_token_is_not_extended(ref):
    vla, exp, cases = ref
    ids = torch.tensor([cases[0]["prompt_ids"] + [29871]])
    action = vla.predict_action(pixel_values=exp["case0.pixel_values"], input_ids=ids)
    np.testing.assert_array_equal(action, exp["case0.tiny_sim.actions"].numpy())


def test_the_image_changes_the_action(ref):
    """The reference on transformers >= 4.50 ignores the image; case0 and case1 share a prompt."""
    vla, exp, cases = ref
    assert cases[0]["prompt_ids"] == cases[1]["prompt_ids"]
    assert exp["case0.generated_ids"].tolist() != exp["case1.generated_ids"].tolist()
    a0 = vla.predict_action(pixel_values=exp["case0.pixel_values"], input_ids=torch.tensor([cases[0]["prompt_ids"]]))
    a1 = vla.predict_action(pixel_values=exp["case1.pixel_values"], input_ids=torch.tensor([cases[1]["prompt_ids"]]))
    assert not np.array_equal(a0, a1)
