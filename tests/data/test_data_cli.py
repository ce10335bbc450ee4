"""``openvla data convert | info | stats`` on a folder of raw .npz episodes and LeRobot datasets."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_testutils import FIXTURES, make_episodes

from openvla.cli import main
from openvla.data.lerobot import LeRobotDataset, LeRobotWriter


def write_npz_folder(folder, episodes):
    folder.mkdir()
    for i, ep in enumerate(episodes):
        arrays = {"actions": ep.actions, "states": ep.states, "instruction": np.array(ep.instruction)}
        arrays.update({f"images.{cam}": frames for cam, frames in ep.images.items()})
        np.savez(folder / f"ep_{i:03d}.npz", **arrays)


def test_convert_raw_folder_then_info_and_stats(tmp_path, capsys):
    episodes = make_episodes(3)
    episodes[2].instruction = ""
    write_npz_folder(tmp_path / "raw", episodes)
    with pytest.warns(UserWarning, match="no instruction"):
        assert main(["data", "convert", str(tmp_path / "raw"), str(tmp_path / "ds"), "--image-format", "video"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 episodes" in out and "skipped 1 episodes" in out and "ep_002.npz: no instruction" in out
    ds = LeRobotDataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds.episode(1).actions, episodes[1].actions)

    assert main(["data", "info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "episodes  2" in out and f"frames    {ds.num_frames}" in out and "image 24x32x3 (video av1" in out
    assert "mask        1        1        1        1        1        1        0" in out

    assert main(["data", "stats", str(tmp_path / "ds"), "--mask", "1,1,1,1,1,1,1", "--recompute"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["ds"]["action"]["mask"] == [True] * 7 and stats["ds"]["num_transitions"] == ds.num_frames


def test_info_json_of_lerobot_fixture(capsys):
    assert main(["data", "info", str(FIXTURES / "lerobot-v3-images"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 3 and info["frames"] == 24 and info["tasks"] == ["pick up the red block",
                                                                                "open the top drawer"]
    assert info["cameras"]["wrist"]["shape"] == [64, 64, 3] and info["action_dim"] == 7 and info["state_dim"] == 8


def test_bad_inputs_exit_with_a_named_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    assert "missing: does not exist" in capsys.readouterr().err
    (tmp_path / "raw").mkdir()
    np.savez(tmp_path / "raw" / "ep.npz", actions=np.zeros((2, 7)))
    (tmp_path / "raw" / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["data", "convert", str(tmp_path / "raw"), str(tmp_path / "out")]) == 2
    assert "bad.npz: corrupt or truncated .npz file" in capsys.readouterr().err


def test_statistics_of_an_empty_dataset_is_an_error(tmp_path, capsys):
    writer = LeRobotWriter(tmp_path / "ds", fps=10)
    writer.add_episode(make_episodes(1)[0])
    writer.close()
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    (tmp_path / "ds" / "meta" / "dataset_statistics.json").unlink()
    # an emptied dataset: no episodes in its metadata
    path = tmp_path / "ds" / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    info["total_episodes"] = info["total_frames"] = 0
    (tmp_path / "ds" / "meta" / "info.json").write_text(json.dumps(info))
    assert main(["data", "stats", str(tmp_path / "ds")]) == 2
    assert "cannot compute statistics of an empty dataset 'ds'" in capsys.readouterr().err
