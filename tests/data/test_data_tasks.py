"""Per-frame tasks: an episode whose task changes part-way keeps each frame's task through reading,
conversion and the training frame's instruction (LeRobot stores a task per frame, RLDS one per step)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from data_testutils import make_episodes
from rlds_builders import BRIDGE_FEATURES, bridge_episode, write_rlds

from openvla.cli import main
from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.loader import FrameBuilder


def _switch_task(root, episode, at, task_index):
    """Rewrite the data parquet so ``episode``'s frames from ``at`` on carry ``task_index`` (as LeRobot may)."""
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    ep, frame = table.column("episode_index").to_numpy(), table.column("frame_index").to_numpy()
    tasks = table.column("task_index").to_numpy().copy()
    tasks[(ep == episode) & (frame >= at)] = task_index
    column = table.schema.get_field_index("task_index")
    pq.write_table(table.set_column(column, "task_index", pa.array(tasks, pa.int64())), path)


def test_task_switch_within_an_episode_survives_conversion(tmp_path, capsys):
    write_dataset(tmp_path / "src", make_episodes(2, lengths=[30, 12], cameras=("image",)), fps=10)
    _switch_task(tmp_path / "src", episode=0, at=20, task_index=1)  # "task 0" -> "task 1" at frame 20
    src = LeRobotDataset(tmp_path / "src")
    want = ["task 0"] * 20 + ["task 1"] * 10
    assert [src.instruction(f) for f in range(30)] == want
    assert main(["data", "convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    dst = LeRobotDataset(tmp_path / "dst")
    assert [dst.instruction(f) for f in range(30)] == want
    assert src.episode(0).instructions == want and src.episode(1).instructions is None
    assert dst.episode(0).instruction == "task 0" and dst.episode(0).instructions == want
    assert dst.tasks == ["task 0", "task 1"]
    rows = pq.read_table(tmp_path / "dst" / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert rows.column("tasks").to_pylist() == [["task 0", "task 1"], ["task 1"]]
    builder = FrameBuilder([dst], [None], chunk=1, cameras=("image",), with_state=False, augment=False,
                           image_size=None)
    frames = (0, 19, 20, 29, 30)  # 30: the first frame of episode 1
    assert [builder(0, f, 0)["instruction"] for f in frames] == ["task 0", "task 0", "task 1", "task 1", "task 1"]


def test_rlds_step_instructions_are_kept(tmp_path):
    steps, meta = bridge_episode(10, seed=0)
    steps["language_instruction"] = ["open the drawer"] * 5 + ["close the drawer"] * 5
    src = write_rlds(tmp_path / "tfds", "bridge_orig", BRIDGE_FEATURES, [(steps, meta)], shards=1)
    assert main(["data", "convert", str(src), str(tmp_path / "dst")]) == 0
    dst = LeRobotDataset(tmp_path / "dst")
    # bridge_orig drops the first and the last step: 8 frames, steps 1..8
    assert [dst.instruction(f) for f in range(dst.num_frames)] == ["open the drawer"] * 4 + ["close the drawer"] * 4
