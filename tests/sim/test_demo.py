"""`openvla demo` end to end at a toy size: demonstrations, training, closed-loop evaluation, report."""

from __future__ import annotations

import json

from openvla.demo import DemoConfig, run_demo


def test_demo_pipeline_writes_its_report(tmp_path):
    cfg = DemoConfig(tasks=["drawer-close-v3", "window-close-v3"], episodes_per_task=2, steps=12, batch_size=8,
                     eval_episodes_per_task=1, num_envs=1, workers=1)
    info = run_demo(cfg, tmp_path)
    assert info["overall"]["n_episodes"] == 2 and info["overall"]["n_errors"] == 0
    report = tmp_path / "report"
    for name in ("REPORT.md", "eval_info.json", "learning_curves.png", "success_per_task.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "REPORT.md").read_text()
    assert "action chunks of 8, parallel decoding, L1 head, proprio" in text
    assert json.loads((report / "eval_info.json").read_text())["overall"] == info["overall"]
    assert len(list((tmp_path / "eval" / "videos").glob("*/*.mp4"))) == 2
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["max_steps"] == 12
