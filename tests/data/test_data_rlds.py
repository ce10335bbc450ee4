"""RLDS without TensorFlow: TFRecord/Example parsing, OXE standardisation of bridge_orig and fractal data,
statistics, normalisation, conversion, mixtures and the gripper conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rlds_builders import (
    BRIDGE_FEATURES,
    FRACTAL_FEATURES,
    bridge_episode,
    fractal_episode,
    write_rlds,
)

from openvla.cli import main
from openvla.data import oxe
from openvla.data import oxe_transforms as T
from openvla.data.lerobot import LeRobotDataset
from openvla.data.normalize import Normalizer
from openvla.data.rlds import RLDSDataset
from openvla.data.stats import compute_statistics
from openvla.data.tfrecord import crc32c, decode_example, encode_example, read_records, write_records


def test_tfrecord_and_example_round_trip(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    example = {"bytes": [b"a", b"", b"\x00\xff"], "floats": np.float32([1.5, -2.0, 3e-8]),
               "ints": np.int64([0, -1, 2**40, 7])}
    write_records(tmp_path / "x.tfrecord", [encode_example(example)] * 2)
    records = list(read_records(tmp_path / "x.tfrecord", verify=True))
    assert len(records) == 2
    got = decode_example(records[1])
    assert got["bytes"] == example["bytes"]
    np.testing.assert_array_equal(got["floats"], example["floats"])
    np.testing.assert_array_equal(got["ints"], example["ints"])
    data = (tmp_path / "x.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"cut.tfrecord: truncated TFRecord file: record 1"):
        list(read_records(tmp_path / "cut.tfrecord"))


@pytest.fixture(scope="module")
def rlds_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds")
    bridge = [bridge_episode(8 + i, seed=i) for i in range(3)]
    bridge.append(bridge_episode(6, seed=9, instruction=""))  # unlabeled: skipped and counted
    write_rlds(root, "bridge_orig", BRIDGE_FEATURES, bridge)
    write_rlds(root, "fractal20220817_data", FRACTAL_FEATURES, [fractal_episode(9, seed=i) for i in range(2)])
    return root, bridge


def test_bridge_orig_is_standardised_as_the_reference(rlds_root):
    root, raw = rlds_root
    ds = RLDSDataset(root / "bridge_orig")
    with pytest.warns(UserWarning, match="skipped, no language instruction"):
        episodes = list(ds)
    assert len(episodes) == 3 and len(ds.skipped) == 1 and "episode 1" in ds.skipped[0]  # 2nd record of shard 1
    for ep, (steps, _) in zip(episodes, raw, strict=False):
        state, action = steps["observation"]["state"], steps["action"]
        n = len(action)
        assert len(ep) == n - 2  # first step (zero action) and last step (no next state) dropped
        np.testing.assert_allclose(ep.actions[:, :6], state[2:, :6] - state[1:-1, :6], rtol=1e-6)  # relabelled
        gripper = T.binarize_gripper_actions(action[1:, 6])[:-1]
        np.testing.assert_array_equal(ep.actions[:, 6], gripper)
        assert set(np.unique(ep.actions[:, 6])) <= {0.0, 1.0} and ep.actions[0, 6] == 1.0  # starts open
        np.testing.assert_array_equal(ep.states[:, :6], state[1:-1, :6])
        np.testing.assert_array_equal(ep.states[:, 6], 0.0)  # the reference's <PAD> column
        np.testing.assert_array_equal(ep.states[:, 7], state[1:-1, 6])
        np.testing.assert_array_equal(ep.images["image"], steps["observation"]["image_0"][1:-1])
        np.testing.assert_array_equal(ep.images["secondary"], steps["observation"]["image_1"][1:-1])
        assert ep.instruction == "put the spoon in the pot"


def test_fractal_gripper_becomes_absolute_open_is_one(rlds_root):
    root, _ = rlds_root
    episodes = list(RLDSDataset(root / "fractal20220817_data", cameras=["primary"]))
    assert len(episodes) == 2
    ep = episodes[0]
    steps, _ = fractal_episode(9, seed=0)
    np.testing.assert_array_equal(ep.actions[:, 6], [1, 1, 1, 0, 0, 0, 1, 1, 1])  # close at 3, open at 6
    np.testing.assert_array_equal(ep.actions[:, :3], steps["action"]["world_vector"])
    np.testing.assert_array_equal(ep.actions[:, 3:6], steps["action"]["rotation_delta"])
    np.testing.assert_array_equal(ep.states, np.concatenate([steps["observation"]["base_pose_tool_reached"],
                                                             steps["observation"]["gripper_closed"]], 1))
    assert ep.instruction == "pick coke can" and list(ep.images) == ["image"]


def test_statistics_and_normalisation_of_standardised_rlds(rlds_root):
    root, _ = rlds_root
    with pytest.warns(UserWarning):
        episodes = list(RLDSDataset(root / "bridge_orig", decode_images=False))
    stats = compute_statistics(episodes, "bridge_orig")["bridge_orig"]
    actions = np.concatenate([e.actions for e in episodes])
    for key, fn in {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}.items():
        np.testing.assert_allclose(stats["action"][key], fn(actions, axis=0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
    assert stats["num_transitions"] == len(actions) and stats["num_trajectories"] == 3
    normed = Normalizer(stats).normalize_actions(actions)
    q01, q99 = np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0)
    want = np.clip(2 * (actions - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(normed[:, :6], want[:, :6], atol=1e-5)
    np.testing.assert_array_equal(normed[:, 6], actions[:, 6])  # the gripper is not normalised (mask)


def test_convert_rlds_to_lerobot_from_the_cli(rlds_root, tmp_path, capsys):
    root, _ = rlds_root
    with pytest.warns(UserWarning):
        code = main(["data", "convert", str(root / "bridge_orig"), str(tmp_path / "bridge"), "--fps", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 3 episodes" in out and "skipped 1 episodes" in out and "no language instruction" in out
    ds = LeRobotDataset(tmp_path / "bridge")
    assert ds.cameras == ["image", "secondary"] and ds.fps == 5 and ds.state_dim == 8
    with pytest.warns(UserWarning):
        source = list(RLDSDataset(root / "bridge_orig"))
    for i, ep in enumerate(source):
        got = ds.episode(i)
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.images["image"], ep.images["image"])
    written = json.loads((tmp_path / "bridge" / "meta" / "dataset_statistics.json").read_text())
    assert list(written) == ["bridge_orig"] and written["bridge_orig"]["action"]["mask"] == [True] * 6 + [False]


def test_missing_feature_and_unknown_dataset_are_named(rlds_root, tmp_path):
    root, _ = rlds_root
    with pytest.raises(KeyError, match="no OXE config for dataset 'my_robot'"):
        RLDSDataset(root / "bridge_orig", name="my_robot")
    features = json.loads((root / "bridge_orig" / "1.0.0" / "features.json").read_text())
    features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["extra"] = \
        {"tensor": {"shape": {}, "dtype": "float32"}}
    copy = write_rlds(tmp_path, "bridge_orig", features, [bridge_episode(5, seed=1)])
    (copy / "features.json").write_text(json.dumps(features))
    with pytest.raises(ValueError, match=r"bridge_orig-train.tfrecord-00000-of-00002: episode 0: feature 'steps/extra'"):
        list(RLDSDataset(copy))


def test_mixtures_and_configs_cover_the_openvla_mixture():
    mix = dict(oxe.get_mixture("oxe_magic_soup_plus_minus"))
    assert len(mix) == 25 and mix["fractal20220817_data"] == 1.0 and mix["kuka"] == 0.8341046294
    assert mix["nyu_franka_play_dataset_converted_externally_to_rlds"] == 3.0 and mix["dobbe"] == 0.2
    plus = dict(oxe.get_mixture("oxe_magic_soup_plus"))
    assert plus["fractal20220817_data"] == 0.54087122203 and plus["droid"] == 0.06 and plus["language_table"] == 0.1
    for name in {n for mixture in oxe.OXE_NAMED_MIXTURES.values() for n, _ in mixture}:
        assert name in oxe.OXE_DATASET_CONFIGS and name in T.STANDARDIZE, name
    assert oxe.get_config("bridge_orig").image_obs_keys["primary"] == "image_0"
    assert oxe.get_config("dobbe").image_obs_keys["primary"] == "wrist_image"
    np.testing.assert_allclose(oxe.balanced_weights([1.0, 2.0], [300, 100]), [0.6, 0.4])
    assert oxe.mixture_length([1.0, 2.0], [300, 100]) == 500
    with pytest.raises(KeyError, match="no mixture 'soup'"):
        oxe.get_mixture("soup")


def test_gripper_conventions_end_open_is_one():
    np.testing.assert_array_equal(T.binarize_gripper_actions(np.float32([1.0, 0.5, 0.02, 0.5, 0.99])),
                                  [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(np.zeros(4)), [1, 1, 1, 1])  # never commanded: open
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(np.float32([0, -1, 0, 1])), [0, 1, 1, 0])
    traj = {"observation": {}, "action": {"world_vector": np.zeros((3, 3)), "rotation_delta": np.zeros((3, 3)),
                                          "gripper_closedness_action": np.float32([[1.0], [-0.5], [0.2]])},
            "language_instruction": np.array(["x"] * 3, dtype=object)}
    traj["observation"]["natural_language_instruction"] = traj["language_instruction"]
    np.testing.assert_allclose(T.roboturk(traj)["action"][:, 6], [0.0, 1.0, 0.8])  # clip then invert
    libero = {"observation": {"state": np.zeros((2, 8))}, "action": np.float32([[0] * 6 + [-1], [0] * 6 + [1]])}
    out = T.libero(libero)
    np.testing.assert_array_equal(out["action"][:, 6], [1.0, 0.0])
    assert out["observation"]["gripper_state"].shape == (2, 2)
    euler = T.quaternion_to_euler(np.float32([[0, 0, np.sin(0.25), np.cos(0.25)]]))
    np.testing.assert_allclose(euler, [[0, 0, 0.5]], atol=1e-6)
