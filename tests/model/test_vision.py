"""The vision tower's written-out blocks against transformers' own ViT forward."""

from __future__ import annotations

import torch

from openvla import get_preset
from openvla.model.vision import VisionBackbone


def test_fused_features_are_the_transformers_hidden_states_of_the_feature_block():
    cfgs = get_preset("tiny").vision
    cfgs[1].feature_layer = -1  # SigLIP from its last block; DINOv2 as OpenVLA, the second-to-last
    torch.manual_seed(0)
    tower = VisionBackbone(cfgs).eval()
    for p in tower.parameters():  # layer scales start at 1e-5; make every branch count
        torch.nn.init.normal_(p, std=0.2)
    pixels = torch.randn(2, 6, 224, 224)
    with torch.no_grad():
        ours = tower(pixels)
        expected = []
        for i, (vit, cfg) in enumerate(zip([tower.featurizer, tower.fused_featurizer], cfgs, strict=True)):
            states = vit(pixels[:, 3 * i:3 * i + 3], output_hidden_states=True).hidden_states
            expected.append(states[cfg.blocks_run][:, cfg.num_prefix_tokens:])
    assert (cfgs[0].blocks_run, cfgs[1].blocks_run) == (3, 4)
    torch.testing.assert_close(ours, torch.cat(expected, dim=-1), rtol=1e-4, atol=1e-4)  # features are ~4 on average here
