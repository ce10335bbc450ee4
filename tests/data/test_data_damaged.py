"""Damaged RLDS data is refused with the file named: shards cut at a record boundary, missing shards,
flipped bytes (TFRecord CRCs checked by default)."""

from __future__ import annotations

import shutil
import struct

import pytest
from rlds_builders import BRIDGE_FEATURES, bridge_episode, write_rlds

from openvla.cli import main
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
