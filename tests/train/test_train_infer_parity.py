"""One path, both ways: a raw dataset frame through the trainer's loader and the same frame as an observation
through the inference path give identical pixels and proprio, and the training targets un-normalise back to the
frame's actions, for 1, 2 and 3 cameras and every normalisation mode."""

from __future__ import annotations

import numpy as np
import pytest

from openvla.data.episodes import Episode
from openvla.data.lerobot import LeRobotDataset, LeRobotWriter
from openvla.data.normalize import MODES
from openvla.train.config import TrainConfig
from openvla.train.distributed import DistEnv
from openvla.train.trainer import build_model, make_training_loader

CAMERAS = ["image", "wrist_image", "side"]


def _write(root, cameras: list[str], seed: int = 0):
    rng = np.random.default_rng(seed)
    with LeRobotWriter(root, fps=10) as writer:
        for e in range(3):
            steps = 5
            states = rng.normal(0, 1, (steps, 3)).astype(np.float32)
            states[:, 1] = 0.25  # a constant proprio dimension (q01 == q99)
            images = {c: rng.integers(0, 256, (steps, 30 + 7 * i, 44, 3), dtype=np.uint8)
                      for i, c in enumerate(cameras)}
            writer.add_episode(Episode(images=images, actions=rng.normal(0, 2, (steps, 4)).astype(np.float32),
                                       instruction=["open the drawer", "push the button"][e % 2], states=states,
                                       episode_index=e))
    return root


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n_cameras", [1, 2, 3])
def test_a_raw_frame_gives_the_same_model_inputs_in_training_and_at_inference(tmp_path, n_cameras, mode):
    cameras = CAMERAS[:n_cameras]
    ds = LeRobotDataset(_write(tmp_path / "data", cameras))
    cfg = TrainConfig(preset="tiny", data=[str(ds.root)], cameras=cameras, num_workers=0, batch_size=4,
                      model={"proprio_dim": -1, "action_normalization": mode, "action_chunk": 2,
                             "parallel_decoding": True, "action_head": "l1"})
    vla = build_model(cfg, [ds])
    loader = make_training_loader(vla, [ds], cfg, DistEnv())
    vla.config.norm_stats.update(loader.statistics)
    processor = vla.processor
    batch = loader.batch_at(3)
    for row, (_, frame) in enumerate(loader.sampler.batch(3)):
        obs = {"images": {c: ds.image(c, frame) for c in cameras}, "instruction": ds.instruction(frame),
               "state": ds.states[frame]}
        prompts, pixels, proprio = processor.observations_to_inputs([obs], ds.name)
        assert pixels.shape[1] == 6 * n_cameras
        np.testing.assert_array_equal(pixels[0].numpy(), batch["pixel_values"][row].numpy())
        np.testing.assert_array_equal(proprio[0].numpy(), batch["proprio"][row].numpy())
        assert proprio[0, 1] == 0  # the constant dimension is 0 both ways
        assert batch["input_ids"][row, : len(prompts[0])].tolist() == prompts[0]

        raw = np.asarray(ds.actions[frame: frame + 2], np.float64)
        valid = batch["action_mask"][row].numpy()
        back = processor.to_robot_actions(batch["actions"][row].numpy(), ds.name)[: len(raw)][valid[: len(raw)]]
        stats = vla.norm_stats[ds.name]["action"]
        low, high = {"bounds_q99": ("q01", "q99"), "bounds": ("min", "max")}.get(mode, (None, None))
        want = raw if low is None else np.clip(raw, stats[low], stats[high])  # bounds modes clip...
        want = np.where(np.asarray(stats.get("mask", [True] * 4), bool), want, raw)  # ...only masked dims
        np.testing.assert_allclose(back, want[valid[: len(raw)]], rtol=1e-5, atol=1e-5)


def test_a_model_with_three_cameras_predicts_from_named_images(tmp_path):
    ds = LeRobotDataset(_write(tmp_path / "data", CAMERAS))
    cfg = TrainConfig(preset="tiny", data=[str(ds.root)], cameras=CAMERAS, num_workers=0, batch_size=2)
    vla = build_model(cfg, [ds])
    vla.config.norm_stats.update(make_training_loader(vla, [ds], cfg, DistEnv()).statistics)
    frames = {c: ds.image(c, 0) for c in CAMERAS}
    by_name = vla.predict_action(images=frames, instruction="open the drawer")
    legacy = vla.predict_action(image=frames["image"], wrist_image=frames["wrist_image"],
                                images={"side": frames["side"]}, instruction="open the drawer")
    np.testing.assert_array_equal(by_name, legacy)
    with pytest.raises(ValueError, match="no 'side' image"):
        vla.predict_action(image=frames["image"], wrist_image=frames["wrist_image"], instruction="open the drawer")
