"""The ML45 recipe end to end at a toy size (2 pretraining tasks, 2 demos, a few steps): every stage runs, the
generalist is saved as a release, the tables and plot are written, and a second call reuses what finished."""

from __future__ import annotations

import json
import time

import pytest

import openvla.sim  # noqa: F401  (headless GL before metaworld)
from openvla.cli import main
from openvla.experiments.generalist import ExperimentConfig, load_config

TOY = {"train_tasks": ["drawer-open-v3", "drawer-close-v3"], "test_tasks": ["window-close-v3"],
       "demos_per_task": 2, "adapt_demos": [2], "rows": ["scratch", "lora"], "seeds": [7], "image_size": 32,
       "batch_size": 4, "pretrain_steps": 3, "adapt_steps": 2, "eval_episodes": 1, "adapt_eval_episodes": 1,
       "language_pairs": [["drawer-open-v3", "drawer-close-v3"]], "language_episodes": 1, "max_steps": 8,
       "num_envs": 1, "workers": 1, "videos": 0}


def test_the_whole_recipe_runs_and_a_rerun_reuses_it(tmp_path):
    out = tmp_path / "ml45"
    (tmp_path / "toy.json").write_text(json.dumps(TOY))
    assert main(["experiment", "all", "--out", str(out), "--config", str(tmp_path / "toy.json")]) == 0

    release = out / "pretrain" / "final"
    for name in ("model.safetensors", "vla_config.json", "README.md"):
        assert (release / name).stat().st_size > 0, name
    assert (release / "tokenizer_config.json").exists() or (release / "tokenizer").exists()
    stats = json.loads((release / "vla_config.json").read_text())["norm_stats"]
    assert list(stats) == ["pretrain"]  # per-dataset statistics travel with the weights
    assert "drawer-open-v3" in (out / "REPORT.md").read_text()

    scratch = json.loads((out / "adapt" / "2-demos" / "scratch" / "seed7" / "result.json").read_text())
    lora = json.loads((out / "adapt" / "2-demos" / "lora" / "seed7" / "result.json").read_text())
    assert scratch["trainable_pc"] > 90 and 0 < lora["trainable_pc"] < scratch["trainable_pc"]
    assert lora["peak_rss_mb"] > 100 and lora["train_s"] > 0
    assert json.loads((out / "adapt" / "2-demos" / "lora" / "seed7" / "run" / "train_config.json").read_text()
                      )["checkpoint"] == str(release)
    language = json.loads((out / "language" / "language.json").read_text())
    assert [r["scene"] for r in language] == ["drawer-open-v3", "drawer-close-v3"]
    assert [r["told"] for r in language] == ["drawer-close-v3", "drawer-open-v3"]
    report = (out / "REPORT.md").read_text()
    for heading in ("## 1. Pretraining", "## 2. The generalist", "## 3. Adaptation", "## 4. Language"):
        assert heading in report
    assert "| generalist, lora |" in report and "| from scratch |" in report
    assert (out / "success_vs_demos.png").stat().st_size > 0

    t0 = time.perf_counter()  # everything is reused: no training, no episode
    assert main(["experiment", "all", "--out", str(out)]) == 0
    assert time.perf_counter() - t0 < 15
    assert json.loads((out / "adapt" / "2-demos" / "lora" / "seed7" / "result.json").read_text()) == lora


def test_a_changed_protocol_is_refused_and_bad_rows_named(tmp_path):
    load_config(tmp_path, ExperimentConfig.from_dict(TOY))
    with pytest.raises(ValueError, match="adapt_steps: 2 -> 5"):
        load_config(tmp_path, ExperimentConfig.from_dict({**TOY, "adapt_steps": 5}))
    with pytest.raises(ValueError, match="unknown rows"):
        ExperimentConfig.from_dict({**TOY, "rows": ["scratch", "lora-typo"]})
    with pytest.raises(ValueError, match="also pretraining tasks"):
        ExperimentConfig.from_dict({**TOY, "test_tasks": ["drawer-open-v3"]})


def test_a_run_claimed_by_a_live_process_is_left_to_it_and_a_dead_ones_claim_is_taken(tmp_path):
    import subprocess
    import sys

    from openvla.experiments.generalist import claim

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "claimed_by.pid").write_text(str(other.pid))
        assert not claim(tmp_path / "a")  # a second `adapt` shell skips it
    finally:
        other.kill()
        other.wait()
    assert claim(tmp_path / "a")  # its holder died: taken over, so a killed run resumes
    assert claim(tmp_path / "a") and claim(tmp_path / "b")
