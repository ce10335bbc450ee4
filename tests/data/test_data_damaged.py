"""Damaged data is refused or reported with the file named: RLDS shards cut at a record boundary, missing
shards, flipped bytes (TFRecord CRCs checked by default); LeRobot info.json claiming more episodes than
exist, missing or truncated videos (``openvla data info``)."""

from __future__ import annotations

import json
import re
import shutil
import struct

import pytest
from data_testutils import make_episodes
from rlds_builders import BRIDGE_FEATURES, bridge_episode, write_rlds

from openvla.cli import main
from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.rlds import RLDSDataset
from openvla.data.tfrecord import read_records


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds")
    return write_rlds(root, "bridge_orig", BRIDGE_FEATURES, [bridge_episode(6 + i, seed=i) for i in range(5)])


def _damaged_copy(folder, tmp_path):
    copy = tmp_path / "bridge_orig" / folder.name
    shutil.copytree(folder, copy)
    return copy, sorted(copy.glob("*.tfrecord-*"))


def _record_spans(path):
    """(start, end) byte offsets of each record of a TFRecord file."""
    data, spans, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        spans.append((pos, pos + 12 + length + 4))
        pos = spans[-1][1]
    return spans


def test_shard_cut_at_a_record_boundary_is_refused(bridge, tmp_path, capsys):
    copy, shards = _damaged_copy(bridge, tmp_path)
    spans = _record_spans(shards[0])
    assert len(spans) == 3  # 5 episodes in 2 shards: 3 + 2
    shards[0].write_bytes(shards[0].read_bytes()[:spans[-1][0]])  # a valid file of 2 records
    assert len(list(read_records(shards[0]))) == 2
    with pytest.raises(ValueError, match=r"tfrecord-00000-of-00002: holds 2 episodes, dataset_info.json says 3 "
                                         r"\(shardLengths\[0\]\): the shard is cut short"):
        list(RLDSDataset(copy))
    code = main(["data", "convert", str(copy.parent), str(tmp_path / "out"), "--fps", "5"])
    assert code != 0 and "holds 2 episodes, dataset_info.json says 3" in capsys.readouterr().err
    assert not (tmp_path / "out" / "meta" / "info.json").exists()


def test_missing_shard_is_refused(bridge, tmp_path):
    copy, shards = _damaged_copy(bridge, tmp_path)
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match=r"lists 2 'train' shards; missing shard 00001-of-00002"):
        RLDSDataset(copy)


def test_flipped_bytes_inside_a_record_are_refused_by_default(bridge, tmp_path, capsys):
    copy, shards = _damaged_copy(bridge, tmp_path)
    steps, _ = bridge_episode(6, seed=0)
    data = bytearray(shards[0].read_bytes())
    at = bytes(data).index(steps["observation"]["state"][1].tobytes())  # the first kept state (bridge drops step 0)
    data[at + 3] ^= 0x40  # the exponent byte of state[1, 0]
    shards[0].write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"tfrecord-00000-of-00002: corrupt TFRecord file: bad data checksum of "
                                         r"record 0"):
        list(RLDSDataset(copy))
    unchecked = next(iter(RLDSDataset(copy, verify_checksums=False)))  # the opt-out reads the wrong number
    assert abs(steps["observation"]["state"][1, 0]) < 1 and abs(unchecked.states[0, 0]) > 1e10
    assert main(["data", "convert", str(copy.parent), str(tmp_path / "out"), "--fps", "5"]) != 0
    assert "bad data checksum of record 0" in capsys.readouterr().err
    assert main(["data", "convert", str(copy.parent), str(tmp_path / "out"), "--fps", "5",
                 "--no-verify-checksums"]) == 0


# -- LeRobot: metadata that claims more than exists, missing or truncated video files -------------------
@pytest.fixture
def video_dataset(tmp_path):
    write_dataset(tmp_path / "ds", make_episodes(3, cameras=("image",), size=(32, 32)), fps=10,
                  image_format="video")
    return tmp_path / "ds", next((tmp_path / "ds" / "videos").rglob("*.mp4"))


def test_info_json_claiming_more_episodes_is_refused(video_dataset, capsys):
    root, _ = video_dataset
    info = json.loads((root / "meta" / "info.json").read_text())
    info["total_episodes"] = 5
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"meta/info.json: total_episodes is 5 but meta/episodes lists 3 episodes: "
                                         r"the dataset is incomplete"):
        LeRobotDataset(root)
    assert main(["data", "info", str(root)]) == 2
    assert "total_episodes is 5 but meta/episodes lists 3 episodes" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing", "cut", "shorter"])
def test_data_info_reports_missing_or_truncated_video(video_dataset, tmp_path, capsys, damage):
    root, video = video_dataset
    lengths = [len(e) for e in make_episodes(3)]
    if damage == "missing":
        video.unlink()
    elif damage == "cut":
        video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    else:  # a whole, readable mp4 that holds only the first two episodes
        write_dataset(tmp_path / "two", make_episodes(2, cameras=("image",), size=(32, 32)), fps=10,
                      image_format="video")
        shutil.copy(next((tmp_path / "two" / "videos").rglob("*.mp4")), video)
    assert main(["data", "info", str(root)]) == 1
    out = capsys.readouterr().out
    assert "problems  1 (files missing, truncated or corrupt" in out
    want = {"missing": r"file-000.mp4: missing \(camera image, episodes 0..2\)",
            "cut": rf"file-000.mp4: episodes 0..2 of camera image: 0 of {sum(lengths)} frames \(cannot read it: ",
            "shorter": rf"file-000.mp4: episode 2 of camera image: 0 of {lengths[2]} frames \(truncated or corrupt\)"}
    assert re.search(want[damage], out), out
    assert main(["data", "info", str(root), "--no-check-files"]) == 0


def test_data_info_reports_a_short_rlds_shard(bridge, tmp_path, capsys):
    copy, shards = _damaged_copy(bridge, tmp_path)
    shards[0].write_bytes(shards[0].read_bytes()[:_record_spans(shards[0])[-1][0]])
    assert main(["data", "info", str(copy)]) == 1
    assert "tfrecord-00000-of-00002: holds 2 episodes, dataset_info.json says 3" in capsys.readouterr().out
