"""The loader: batch layout, normalisation, chunk padding, mixture weights, determinism, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_testutils import make_episodes

from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.loader import FrameSampler, make_loader
from openvla.data.normalize import Normalizer


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    write_dataset(root / "alpha", make_episodes(6, seed=1, lengths=[4, 7, 5, 9, 3, 6]), fps=10)
    write_dataset(root / "beta", make_episodes(3, seed=2, lengths=[10, 12, 8]), fps=10)
    return [LeRobotDataset(root / "alpha"), LeRobotDataset(root / "beta")]


def test_batch_layout_and_normalised_values(datasets):
    loader = make_loader(datasets, batch_size=8, seed=0, chunk=3, cameras=("image", "wrist"), with_state=True,
                         num_workers=0, image_size=32)
    batch = next(loader)
    assert batch["images"]["image"].shape == (8, 32, 32, 3) and batch["images"]["image"].dtype == torch.uint8
    assert batch["actions"].shape == (8, 3, 7) and batch["actions"].dtype == torch.float32
    assert batch["action_mask"].shape == (8, 3) and batch["state"].shape == (8, 5)
    assert len(batch["instruction"]) == 8 and set(batch["dataset_name"]) <= {"alpha", "beta"}
    assert set(loader.statistics) == {"alpha", "beta"}
    for i in range(8):
        ds = datasets[["alpha", "beta"].index(batch["dataset_name"][i])]
        frame = int(ds.episode_starts[[ds.location(f)[0] for f in ds.episode_starts].index(
            int(batch["episode_index"][i]))]) + int(batch["frame_index"][i])
        norm = Normalizer(loader.statistics[ds.name])
        np.testing.assert_allclose(batch["actions"][i, 0].numpy(), norm.normalize_actions(ds.actions[frame]))
        assert batch["instruction"][i] == ds.instruction(frame)
    assert batch["actions"][..., :6].abs().max() <= 1.0


def test_chunk_is_padded_with_last_action_at_episode_end(datasets):
    ds = datasets[0]
    loader = make_loader([ds], batch_size=len(ds.actions), seed=3, chunk=4, num_workers=0, image_size=None)
    batch = next(loader)
    norm = Normalizer(loader.statistics["alpha"])
    for i in range(len(ds.actions)):
        episode, index = int(batch["episode_index"][i]), int(batch["frame_index"][i])
        start = int(ds.episode_starts[episode])
        end = start + int(ds.episode_lengths[episode])
        frame = start + index
        valid = np.arange(frame, frame + 4) < end
        np.testing.assert_array_equal(batch["action_mask"][i].numpy(), valid)
        want = norm.normalize_actions(ds.actions[np.minimum(np.arange(frame, frame + 4), end - 1)])
        np.testing.assert_allclose(batch["actions"][i].numpy(), want)
    # one pass over a single dataset visits every frame once (sampling without replacement per epoch)
    assert sorted(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(), strict=True)) == \
        sorted(ds.location(f) for f in range(len(ds.actions)))


def test_deterministic_for_a_seed_whatever_the_workers(datasets):
    def run(workers):
        loader = make_loader(datasets, [0.5, 0.5], batch_size=6, seed=11, augment=True, num_workers=workers,
                             image_size=32)
        batches = [next(loader) for _ in range(5)]
        loader.close()
        return batches

    for a, b in zip(run(0), run(2), strict=True):
        assert torch.equal(a["images"]["image"], b["images"]["image"])
        assert torch.equal(a["actions"], b["actions"]) and a["dataset_name"] == b["dataset_name"]
    other = make_loader(datasets, [0.5, 0.5], batch_size=6, seed=12, num_workers=0, image_size=32)
    assert not torch.equal(next(other)["actions"], run(0)[0]["actions"])


def test_resume_from_state_dict(datasets):
    loader = make_loader(datasets, batch_size=4, seed=5, num_workers=2, image_size=16)
    for _ in range(3):
        next(loader)
    state = loader.state_dict()
    expected = [next(loader) for _ in range(3)]
    loader.close()
    resumed = make_loader(datasets, batch_size=4, seed=5, num_workers=0, image_size=16)
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert torch.equal(got["actions"], want["actions"]) and torch.equal(got["images"]["image"],
                                                                             want["images"]["image"])
    assert resumed.state_dict()["step"] == 6
    ranks = [make_loader(datasets, batch_size=4, seed=5, num_workers=0, image_size=16, rank=r, world_size=2)
             for r in (0, 1)]
    assert torch.equal(next(ranks[1])["actions"], resumed.batch_at(1)["actions"])  # global batch 1
    assert torch.equal(ranks[0].batch_at(3)["actions"], resumed.batch_at(6)["actions"])  # global batch 6
    with pytest.raises(ValueError, match="seed=5, this loader has 6"):
        make_loader(datasets, batch_size=4, seed=6, num_workers=0).load_state_dict(state)


def test_mixture_weights_are_followed():
    sampler = FrameSampler([1000, 50, 400], [0.2, 0.5, 0.3], batch_size=64, seed=0)
    labels = np.array([d for step in range(200) for d, _ in sampler.batch(step)])
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / len(labels), [0.2, 0.5, 0.3], atol=0.01)
    frames = [f for step in range(200) for d, f in sampler.batch(step) if d == 1]
    # a small dataset cycles through whole epochs: every frame equally often
    assert set(np.bincount(frames, minlength=50)) <= {len(frames) // 50, len(frames) // 50 + 1}
    proportional = FrameSampler([300, 100], None, batch_size=32, seed=1).probabilities
    np.testing.assert_allclose(proportional, [0.75, 0.25])
    resumed = FrameSampler([1000, 50, 400], [0.2, 0.5, 0.3], batch_size=64, seed=0)
    assert resumed.batch(199) == sampler.batch(199)


def test_frame_transform_and_collate_run_on_every_frame(datasets):
    def transform(frame):
        return {"pixels": frame["images"]["image"].mean(), "prompt": f"In: {frame['instruction']}"}

    loader = make_loader(datasets, batch_size=5, seed=0, num_workers=2, image_size=8, frame_transform=transform,
                         collate=lambda items: items)
    batch = next(loader)
    loader.close()
    assert len(batch) == 5 and all(item["prompt"].startswith("In: task ") for item in batch)


def test_clear_errors_for_bad_requests(datasets, tmp_path):
    with pytest.raises(ValueError, match=r"dataset 'alpha' \(.*alpha\) has no camera 'top'"):
        make_loader(datasets, cameras=("top",), num_workers=0)
    write_dataset(tmp_path / "six", make_episodes(2, action_dim=6), fps=10)
    with pytest.raises(ValueError, match="same action size"):
        make_loader([datasets[0], LeRobotDataset(tmp_path / "six")], num_workers=0)
    write_dataset(tmp_path / "nostate", make_episodes(2, state_dim=None), fps=10)
    with pytest.raises(ValueError, match="has no observation.state"):
        make_loader([LeRobotDataset(tmp_path / "nostate")], with_state=True, num_workers=0)
    with pytest.raises(ValueError, match="weights must be 2 non-negative"):
        make_loader(datasets, weights=[1.0, -1.0], num_workers=0)
