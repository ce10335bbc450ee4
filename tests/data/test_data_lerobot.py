"""LeRobot layout: our writer round-trips, LeRobot-written fixtures and a v2.1 dataset read, bad input fails clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_testutils import FIXTURES, make_episodes

from openvla.data.lerobot import LeRobotDataset, LeRobotWriter, write_dataset
from openvla.data.video import VideoEncoder


@pytest.mark.parametrize("image_format", ["png", "video"])
def test_written_dataset_reads_back_frame_for_frame(tmp_path, image_format):
    episodes = make_episodes(4, size=(24, 32))
    for ep in episodes:
        ep.extra = {"reward": np.arange(len(ep), dtype=np.float32)}
    write_dataset(tmp_path / "ds", episodes, fps=15, image_format=image_format, row_group_frames=4)
    ds = LeRobotDataset(tmp_path / "ds")
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (4, sum(len(e) for e in episodes), 15)
    assert ds.cameras == ["image", "wrist"] and ds.action_dim == 7 and ds.state_dim == 5
    assert ds.tasks == ["task 0", "task 1", "task 2"]
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        assert got.episode_index == i and got.instruction == ep.instruction
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.states, ep.states)
        np.testing.assert_array_equal(got.extra["reward"], ep.extra["reward"])
        for cam, frames in ep.images.items():
            if image_format == "png":
                np.testing.assert_array_equal(got.images[cam], frames)
            else:  # lossy codec: close per frame, and random access agrees with sequential decoding
                means = got.images[cam].reshape(len(ep), -1).mean(1)
                np.testing.assert_allclose(means, frames.reshape(len(ep), -1).mean(1), atol=3)
                assert np.abs(got.images[cam].astype(int) - frames).mean() < 12
                frame = int(ds.episode_starts[i]) + len(ep) - 1
                np.testing.assert_array_equal(ds.image(cam, frame), got.images[cam][-1])


def test_writer_metadata_matches_lerobot_layout(tmp_path):
    write_dataset(tmp_path / "ds", make_episodes(3), fps=10)
    meta = tmp_path / "ds" / "meta"
    info = json.loads((meta / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_tasks"] == 3
    assert info["features"]["observation.images.image"]["dtype"] == "image"
    reference = pq.read_table(FIXTURES / "lerobot-v3-images" / "data" / "chunk-000" / "file-000.parquet").schema
    ours = pq.read_table(tmp_path / "ds" / "data" / "chunk-000" / "file-000.parquet").schema
    assert [(f.name, str(f.type)) for f in ours if f.name != "observation.state"] == \
        [(f.name, str(f.type)) for f in reference if f.name != "observation.state"]
    stats = json.loads((meta / "stats.json").read_text())
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert np.array(stats["observation.images.image"]["mean"]).shape == (3, 1, 1)
    tasks = pq.read_table(meta / "tasks.parquet")
    assert tasks.column("__index_level_0__").to_pylist() == ["task 0", "task 1", "task 2"]
    assert b"pandas" in tasks.schema.metadata
    reference_stats = json.loads((meta / "dataset_statistics.json").read_text())["ds"]
    assert reference_stats["action"]["mask"] == [True] * 6 + [False] and reference_stats["num_trajectories"] == 3


@pytest.mark.parametrize("name", ["lerobot-v3-images", "lerobot-v3-video"])
def test_reads_datasets_written_by_lerobot(name):
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    ds = LeRobotDataset(FIXTURES / name)
    assert ds.cameras == ["image", "wrist"] and ds.num_episodes == 3 and ds.num_frames == 24
    episodes = list(ds)
    np.testing.assert_array_equal(np.concatenate([e.actions for e in episodes]), np.float32(expected["actions"]))
    np.testing.assert_array_equal(np.concatenate([e.states for e in episodes]), np.float32(expected["states"]))
    assert [ds.location(f) for f in range(24)] == list(zip(expected["episode_index"], expected["frame_index"],
                                                           strict=True))
    assert [e.instruction for e in episodes for _ in range(len(e))] == expected["task"]
    tolerance = 0.0 if name.endswith("images") else 3.0  # AV1 is lossy
    for cam in ("image", "wrist"):
        means = np.concatenate([e.images[cam].reshape(len(e), -1).mean(1) for e in episodes])
        np.testing.assert_allclose(means, expected[f"{cam}_mean"], atol=tolerance)
        single = [ds.image(cam, f).mean() for f in (0, 7, 23)]
        np.testing.assert_allclose(single, means[[0, 7, 23]], atol=1e-9)


def write_v21(root, episodes, fps=10, video=False):
    """A LeRobot v2.1 dataset as the legacy library lays it out: one parquet (and mp4) per episode, jsonl."""
    (root / "meta").mkdir(parents=True)
    tasks = sorted({e.instruction for e in episodes})
    features = {
        "observation.images.image": {"dtype": "video" if video else "image", "shape": [24, 32, 3],
                                     "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [5], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": None},
        **{k: {"dtype": "int64", "shape": [1], "names": None} for k in ("frame_index", "episode_index", "index",
                                                                        "task_index")},
    }
    info = {"codebase_version": "v2.1", "fps": fps, "total_episodes": len(episodes), "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": features}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                       for i, t in enumerate(tasks)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": i, "tasks": [e.instruction], "length": len(e)}) + "\n"
        for i, e in enumerate(episodes)))
    (root / "data" / "chunk-000").mkdir(parents=True)
    start = 0
    for i, e in enumerate(episodes):
        import io

        from PIL import Image

        def png(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            return {"bytes": buf.getvalue(), "path": None}

        n = len(e)
        columns = {} if video else {"observation.images.image": [png(f) for f in e.images["image"]]}
        if video:
            encoder = VideoEncoder(root / "videos" / "chunk-000" / "observation.images.image" / f"episode_{i:06d}.mp4",
                                   fps, 32, 24, "libx264")
            encoder.add(e.images["image"])
            encoder.close()
        table = pa.table({
            **columns,
            "observation.state": [list(map(float, s)) for s in e.states],  # variable-size lists, as HF writes
            "action": [list(map(float, a)) for a in e.actions],
            "frame_index": np.arange(n), "episode_index": np.full(n, i), "index": start + np.arange(n),
            "task_index": np.full(n, tasks.index(e.instruction)),
        })
        pq.write_table(table, root / "data" / "chunk-000" / f"episode_{i:06d}.parquet")
        start += n


@pytest.mark.parametrize("video", [False, True])
def test_reads_v21_dataset(tmp_path, video):
    episodes = make_episodes(3, cameras=("image",))
    write_v21(tmp_path / "v21", episodes, video=video)
    ds = LeRobotDataset(tmp_path / "v21")
    assert ds.version == "v2.1" and ds.num_episodes == 3 and ds.cameras == ["image"]
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.states, ep.states)
        assert got.instruction == ep.instruction
        if video:  # lossy: per-frame means agree, random access agrees with sequential decoding
            np.testing.assert_allclose(got.images["image"].reshape(len(ep), -1).mean(1),
                                       ep.images["image"].reshape(len(ep), -1).mean(1), atol=3)
            np.testing.assert_array_equal(ds.image("image", int(ds.episode_starts[i]) + 1), got.images["image"][1])
        else:
            np.testing.assert_array_equal(got.images["image"], ep.images["image"])


def test_action_size_differing_between_episodes_is_named(tmp_path):
    episodes = make_episodes(3, cameras=("image",))
    write_v21(tmp_path / "v21", episodes)
    bad = make_episodes(1, seed=5, cameras=("image",), action_dim=6)[0]
    path = tmp_path / "v21" / "data" / "chunk-000" / "episode_000001.parquet"
    table = pq.read_table(path)
    actions = pa.array([list(map(float, a)) for a in bad.actions[: table.num_rows]] +
                       [[0.0] * 6] * max(0, table.num_rows - len(bad)))
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", actions), path)
    with pytest.raises(ValueError, match=r"episode_000001.parquet: episode 1 .*'action' has 6 values, expected 7"):
        LeRobotDataset(tmp_path / "v21")
    with LeRobotWriter(tmp_path / "w", fps=10) as writer:
        writer.add_episode(episodes[0])
        with pytest.raises(ValueError, match="episode 0 of 'synthetic': action size 6 differs"):
            writer.add_episode(bad)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_or_truncated_parquet_names_file_and_episodes(tmp_path, damage):
    write_dataset(tmp_path / "ds", make_episodes(3), fps=10)
    path = tmp_path / "ds" / "data" / "chunk-000" / "file-000.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"x" * len(data))
    with pytest.raises(ValueError, match=r"file-000.parquet: corrupt or truncated parquet file \(episodes 0..2\)"):
        LeRobotDataset(tmp_path / "ds")


def test_corrupt_image_bytes_name_camera_episode_and_frame(tmp_path):
    episodes = make_episodes(2, cameras=("image",))
    write_dataset(tmp_path / "ds", episodes, fps=10)
    path = tmp_path / "ds" / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    images = table.column("observation.images.image").to_pylist()
    images[6]["bytes"] = images[6]["bytes"][:40]
    column = pa.array(images, table.schema.field("observation.images.image").type)
    pq.write_table(table.set_column(0, "observation.images.image", column), path)
    ds = LeRobotDataset(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"cannot decode image \(camera 'image', episode 1, frame 1\)"):
        ds.episode(1)


def test_truncated_video_names_file_camera_and_episode(tmp_path):
    write_dataset(tmp_path / "ds", make_episodes(3, cameras=("image",), size=(32, 32)), fps=10,
                  image_format="video")
    video = next((tmp_path / "ds" / "videos").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[:1200])
    ds = LeRobotDataset(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"file-000.mp4: .*video \(camera 'image', episode 2\)"):
        ds.episode(2)


def test_missing_camera_and_instruction(tmp_path):
    episodes = make_episodes(3)
    episodes[1].instruction = "  "
    with pytest.warns(UserWarning, match="skipped episode 1 of 'synthetic': no instruction"):
        with LeRobotWriter(tmp_path / "ds", fps=10) as writer:
            for ep in episodes:
                writer.add_episode(ep)
    assert writer.skipped == ["episode 1 of 'synthetic': no instruction"]
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.num_episodes == 2
    with pytest.raises(KeyError, match="no camera 'top'; cameras: \\['image', 'wrist'\\]"):
        ds.image("top", 0)
    other = make_episodes(1, cameras=("image",))[0]
    with LeRobotWriter(tmp_path / "w", fps=10) as writer:
        writer.add_episode(episodes[0])
        with pytest.raises(ValueError, match=r"cameras \['image'\] differ from the dataset's \['image', 'wrist'\]"):
            writer.add_episode(other)


def test_failed_writer_leaves_no_info_and_refuses_to_overwrite(tmp_path):
    with pytest.raises(RuntimeError), LeRobotWriter(tmp_path / "ds", fps=10) as writer:
        writer.add_episode(make_episodes(1)[0])
        raise RuntimeError("interrupted")
    with pytest.raises(FileNotFoundError, match="not a LeRobot dataset"):
        LeRobotDataset(tmp_path / "ds")
    with pytest.raises(FileExistsError):
        LeRobotWriter(tmp_path / "ds", fps=10)
    shutil.rmtree(tmp_path / "ds")
    with pytest.raises(ValueError, match="no episodes were written"):
        LeRobotWriter(tmp_path / "ds", fps=10).close()
