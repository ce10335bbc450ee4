"""The openvla-7b preset covers the released checkpoint key for key, without downloading it."""

from __future__ import annotations

import json
import time

import torch

from openvla import VLA, get_preset
from openvla.checkpoint.convert import UNUSED_OURS, openvla_to_ours, ours_to_openvla

REFERENCE_PARAMS = 7_541_237_184
# Ours with no reference tensor: DINOv2's mask token (unused), and the CLS row of DINOv2's position table,
# which the converter sets to zero because timm adds no position to CLS.
EXTRA_ELEMENTS = {"vision_backbone.featurizer.embeddings.mask_token": 1024, "cls position row": 1024}


def _meta_model():
    with torch.device("meta"):
        return VLA(get_preset("openvla-7b"))


def test_7b_preset_builds_on_meta_in_seconds():
    start = time.perf_counter()
    model = _meta_model()
    assert time.perf_counter() - start < 30
    total = sum(p.numel() for p in model.parameters())
    assert total == REFERENCE_PARAMS + sum(EXTRA_ELEMENTS.values())


def test_converter_maps_all_982_reference_keys(fixtures_dir):
    data = json.loads((fixtures_dir / "openvla-7b.state_dict_shapes.json").read_text())
    shapes = data["state_dict"]
    assert len(shapes) == 982 and data["num_parameters"] == REFERENCE_PARAMS
    reference = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert sum(t.numel() for t in reference.values()) == REFERENCE_PARAMS

    ours, unknown = openvla_to_ours(reference)
    assert unknown == []
    model_shapes = {k: tuple(v.shape) for k, v in _meta_model().state_dict().items()}
    assert set(ours) == set(model_shapes) - set(UNUSED_OURS)
    assert all(tuple(t.shape) == model_shapes[k] for k, t in ours.items())
    mapped = sum(t.numel() for t in ours.values()) - EXTRA_ELEMENTS["cls position row"]
    assert mapped == REFERENCE_PARAMS

    back = ours_to_openvla(ours)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(s) for k, s in shapes.items()}


def test_unused_parameters_do_not_affect_outputs(tiny_reference_dir):
    """The mask token (ours only) and the SigLIP MAP head / last blocks (kept for strict loading) are unused."""
    vla = VLA.from_pretrained(tiny_reference_dir)
    pixels = torch.randn(1, 6, 224, 224)
    ids = torch.tensor([[1, 100, 200, 300]])
    with torch.no_grad():
        before = vla(input_ids=ids, pixel_values=pixels).logits
        fe = vla.vision_backbone.featurizer
        fe.embeddings.mask_token.normal_()
        vla.vision_backbone.fused_featurizer.head.probe.normal_()
        fe.layernorm.weight.normal_()
        for p in fe.encoder.layer[-1].parameters():
            p.normal_()
        after = vla(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    assert UNUSED_OURS == ("vision_backbone.featurizer.embeddings.mask_token",)
