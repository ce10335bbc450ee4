"""Closed-loop evaluation on Meta-World: expert vs random, bad policies, resume, report files, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("metaworld")

from openvla.cli import main  # noqa: E402
from openvla.sim import ExpertPolicy, evaluate  # noqa: E402

EASY = "reach,drawer-close,button-press-topdown,window-close"  # MT10 tasks; the expert solves each >= 95%


def test_expert_through_the_cli_succeeds_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--policy", "expert", "--env", "metaworld", "--tasks", EASY,
                 "--episodes-per-task", "3", "--seed", "3", "--num-envs", "2", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    info = json.loads((out / "eval_info.json").read_text())
    assert info["complete"] and info["overall"]["n_episodes"] == 12
    assert info["overall"]["pc_success"] >= 95
    assert {t["task"] for t in info["per_task"]} == {f"{t}-v3" for t in EASY.split(",")}
    assert set(info["per_group"]) == {"easy"} and info["per_group"]["easy"]["n_episodes"] == 12
    for key in ("pc_success", "avg_sum_reward", "avg_max_reward", "n_episodes", "eval_s", "eval_ep_s",
                "video_paths"):
        assert key in info["overall"]
    seeds = [e["seed"] for e in info["per_episode"]]
    assert len(set(seeds)) == 12 and all(s % 2 == 1 for s in seeds)  # evaluation seeds are odd
    assert len(info["overall"]["video_paths"]) == 4  # the first episode of each task
    for path in info["overall"]["video_paths"]:
        assert path.endswith(".mp4") and (out / "videos").exists()
        import imageio.v3 as iio

        frames = iio.imread(path, plugin="pyav")
        assert frames.shape[1:] == (128, 128, 3) and len(frames) > 5
    assert (out / "success.png").stat().st_size > 10_000
    assert "| **overall** | 12 |" in (out / "summary.md").read_text()
    assert "overall" in capsys.readouterr().out


def test_random_policy_almost_never_succeeds():
    info = evaluate("random", tasks="push,pick-place", episodes_per_task=2, seed=0, image_size=32,
                    progress=False)
    assert info["overall"]["n_episodes"] == 4 and info["overall"]["pc_success"] <= 25
    assert all(e["n_steps"] == 500 for e in info["per_episode"] if not e["success"])


class Flaky(ExpertPolicy):
    """The expert, except that episode k (counted by reset) misbehaves as `faults[k]` says."""

    def __init__(self, faults: dict[int, str]):
        super().__init__()
        self.faults, self.episodes = faults, -1

    def reset(self) -> None:
        self.episodes += 1

    def act(self, observation):
        fault = self.faults.get(self.episodes)
        if fault == "size":
            return np.zeros((2, 7), np.float32)
        if fault == "nan":
            return np.full((1, 4), np.nan, np.float32)
        if fault == "raise":
            raise RuntimeError("CUDA out of memory (pretend)")
        if fault == "interrupt":
            raise KeyboardInterrupt
        return super().act(observation)


def test_bad_policy_output_fails_only_that_episode(tmp_path):
    policy = Flaky({0: "size", 1: "nan", 2: "raise"})
    info = evaluate(policy, tasks="reach", episodes_per_task=4, out_dir=tmp_path, video_episodes=0,
                    progress=False)
    errors = [e["error"] for e in info["per_episode"]]
    assert "shape (2, 7)" in errors[0] and "expected [T, 4]" in errors[0]
    assert "NaN" in errors[1] and "CUDA out of memory" in errors[2]
    assert errors[3] is None and info["per_episode"][3]["success"]
    assert info["overall"]["n_errors"] == 3 and info["overall"]["pc_success"] == 25
    assert "Episodes cut short" in (tmp_path / "summary.md").read_text()


def test_interrupted_evaluation_keeps_finished_episodes_and_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        evaluate(Flaky({2: "interrupt"}), tasks="reach", episodes_per_task=4, out_dir=tmp_path,
                 video_episodes=0, progress=False)
    partial = json.loads((tmp_path / "eval_info.json").read_text())
    assert not partial["complete"] and [e["episode_ix"] for e in partial["per_episode"]] == [0, 1]
    assert "(incomplete)" in (tmp_path / "summary.md").read_text()

    resumed = Flaky({})
    info = evaluate(resumed, tasks="reach", episodes_per_task=4, out_dir=tmp_path, video_episodes=0,
                    progress=False)
    assert resumed.episodes == 1  # only episodes 2 and 3 were run again
    assert info["complete"] and [e["episode_ix"] for e in info["per_episode"]] == [0, 1, 2, 3]
    assert info["overall"]["pc_success"] == 100

    with pytest.raises(ValueError, match="other settings"):
        evaluate(Flaky({}), tasks="reach", episodes_per_task=4, seed=9, out_dir=tmp_path, progress=False)


def test_unknown_task_lists_the_valid_ones(tmp_path, capsys):
    code = main(["eval", "--policy", "expert", "--tasks", "reach,make-coffee", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "make-coffee" in err and "window-close-v3" in err and "very_hard" in err
    code = main(["eval", "--policy", "/no/such/checkpoint", "--tasks", "reach", "--out", str(tmp_path)])
    assert code == 2 and "neither" in capsys.readouterr().err
