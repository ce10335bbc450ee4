"""Checkpoints written before cameras were named and heads were objects still load and act the same."""

from __future__ import annotations

import json

import numpy as np
from safetensors.torch import load_file, save_file

from openvla import VLA, get_preset


def test_an_old_diffusion_checkpoint_with_num_images_loads_and_acts_the_same(tmp_path):
    cfg = get_preset("tiny")
    for v in cfg.vision:
        v.image_size = 56
    cfg.action_dim, cfg.action_chunk, cfg.parallel_decoding = 3, 2, True
    cfg.action_head, cfg.diffusion_steps, cfg.cameras = "diffusion", 3, ["image", "wrist_image"]
    vla = VLA.create(cfg, ["open the drawer"], seed=0).eval()
    vla.save_pretrained(tmp_path)
    # As the previous release wrote it: a camera count, and the noisy-action projector beside the head.
    config = json.loads((tmp_path / "vla_config.json").read_text())
    del config["cameras"], config["frame_resize"], config["jpeg_quality"], config["prompt"]
    del config["default_unnorm_key"]
    config["num_images"] = 2
    (tmp_path / "vla_config.json").write_text(json.dumps(config))
    weights = load_file(str(tmp_path / "model.safetensors"))
    old = {k.replace("action_head.noisy_action_projector.", "noisy_action_projector."): v for k, v in weights.items()}
    assert any(k.startswith("noisy_action_projector.") for k in old)
    save_file(old, str(tmp_path / "model.safetensors"))

    loaded = VLA.from_pretrained(tmp_path)
    assert loaded.config.cameras == ["image", "wrist_image"]
    rng = np.random.default_rng(0)
    image, wrist = (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2))
    np.testing.assert_array_equal(
        loaded.predict_action(image=image, wrist_image=wrist, instruction="open the drawer"),
        vla.predict_action(image=image, wrist_image=wrist, instruction="open the drawer"))
