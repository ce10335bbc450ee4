"""eval_info aggregation (LeRobot's names), plot, markdown and video files."""

from __future__ import annotations

import json

import numpy as np

from openvla.sim.report import build_eval_info, write_report, write_video


def _row(task, group, i, success, error=None):
    return {"task": task, "group": group, "episode_ix": i, "seed": 2 * i + 1, "sum_reward": 1.0 + i,
            "max_reward": 1.0, "success": success, "n_steps": 10, "error": error, "seconds": 0.1}


def test_aggregates_per_task_group_and_overall(tmp_path):
    rows = [_row("push-v3", "hard", 0, True), _row("push-v3", "hard", 1, False, "policy raised X"),
            _row("reach-v3", "easy", 1, True), _row("reach-v3", "easy", 0, True)]
    config = {"policy": "p", "env": "metaworld", "tasks": ["reach-v3", "push-v3"], "seed": 0,
              "max_steps": None, "open_loop_steps": None, "image_size": 64}
    info = build_eval_info(rows, config, eval_s=8.0, n_run=4, complete=True)
    assert [t["task"] for t in info["per_task"]] == ["reach-v3", "push-v3"]  # the order asked for
    assert [e["episode_ix"] for e in info["per_episode"][:2]] == [0, 1]
    assert list(info["per_group"]) == ["easy", "hard"]  # difficulty order, not alphabetical by accident
    assert info["per_group"]["hard"]["pc_success"] == 50 and info["per_group"]["easy"]["pc_success"] == 100
    assert info["overall"]["pc_success"] == 75 and info["overall"]["eval_ep_s"] == 2.0
    assert info["per_task"][1]["metrics"]["successes"] == [True, False]
    assert info["errors"] == {"policy raised X": 1}
    write_report(tmp_path, info)
    assert json.loads((tmp_path / "eval_info.json").read_text())["overall"]["n_errors"] == 1
    text = (tmp_path / "summary.md").read_text()
    assert "| hard | 2 | 50.0 |" in text and "| **overall** | 4 | **75.0** |" in text
    assert (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_video_pads_odd_sizes(tmp_path):
    import imageio.v3 as iio

    frames = [np.full((33, 31, 3), i * 20, np.uint8) for i in range(6)]
    path = write_video(tmp_path / "v" / "ep.mp4", frames, fps=20)
    video = iio.imread(path, plugin="pyav")
    assert video.shape == (6, 34, 32, 3)
