"""`openvla train` end to end on a dataset written by the test: logs, checkpoints, exact resume, failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from openvla import VLA
from openvla.cli import main
from openvla.train.checkpointing import complete_checkpoints
from openvla.train.config import TrainConfig
from openvla.train.metrics import read_metrics
from openvla.train.trainer import NonFiniteLoss, train

REPO = Path(__file__).resolve().parents[2]
FAST = {"preset": "tiny", "batch_size": 4, "num_workers": 0, "log_every": 1, "lr": 1e-3, "seed": 3}


def _cfg(toy_dataset, out, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**FAST, "data": [str(toy_dataset)], "out": str(out), **kw})


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl")}


def test_a_run_writes_logs_checkpoints_and_a_usable_model(toy_dataset, tmp_path):
    final = train(_cfg(toy_dataset, tmp_path / "run", max_steps=12, save_every=5, keep_last=2))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("loss", "action_accuracy", "action_l1", "lr", "grad_norm", "samples_per_s", "data_wait_s"):
        assert all(key in r for r in rows)
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.mean([r["loss"] for r in rows[:3]])
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step-000010", "step-000012"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["max_steps"] == 12
    vla = VLA.from_pretrained(final)
    assert set(vla.norm_stats) == {"toy"}
    action = vla.predict_action(image=np.zeros((32, 32, 3), np.uint8), instruction="move to the red square")
    assert action.shape == (4,)


def test_resume_is_exact(toy_dataset, tmp_path):
    train(_cfg(toy_dataset, tmp_path / "full", max_steps=8, save_every=4))
    train(_cfg(toy_dataset, tmp_path / "parts", max_steps=4, save_every=4))  # stopped at step 4
    train(_cfg(toy_dataset, tmp_path / "parts", max_steps=8, save_every=4))  # resumed
    full, parts = _losses(tmp_path / "full"), _losses(tmp_path / "parts")
    assert [parts[s] for s in range(5, 9)] == [full[s] for s in range(5, 9)]


def test_lora_run_saves_adapter_and_merged_model(toy_dataset, tmp_path):
    base = tmp_path / "base"
    train(_cfg(toy_dataset, base, max_steps=2, save_every=100))
    run = tmp_path / "lora"
    final = train(TrainConfig.from_dict({**FAST, "preset": None, "checkpoint": str(base / "final"),
                                         "mode": "lora", "lora_rank": 4, "lora_alpha": 4,
                                         "data": [str(toy_dataset)], "out": str(run), "max_steps": 3}))
    assert (run / "adapter" / "adapter_config.json").exists()
    merged = VLA.from_pretrained(final)
    assert (final / "dataset_statistics.json").exists() and "toy" in merged.norm_stats


def test_two_processes_resume_exactly(toy_dataset, tmp_path):
    def torchrun(out: Path, steps: int) -> None:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "openvla.cli", "train", "--preset", "tiny", "--data", str(toy_dataset), "--out", str(out),
               "--set", "batch_size=2", "num_workers=0", "log_every=1", "save_every=2", "seed=3",
               f"max_steps={steps}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]

    torchrun(tmp_path / "full", 4)
    torchrun(tmp_path / "parts", 2)
    torchrun(tmp_path / "parts", 4)
    full, parts = _losses(tmp_path / "full"), _losses(tmp_path / "parts")
    assert [parts[s] for s in (3, 4)] == [full[s] for s in (3, 4)]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import openvla.train.checkpointing as ck
    from openvla.train.config import TrainConfig
    from openvla.train.trainer import train

    original = ck._write_files
    def slow_write(directory, state, trainer_state, env):
        original(directory, state, trainer_state, env)
        if trainer_state["step"] == 4:  # the second checkpoint: signal, then hang before it is renamed
            Path(sys.argv[2]).write_text("writing")
            time.sleep(600)
    ck._write_files = slow_write
    train(TrainConfig.from_file(sys.argv[1]))
""")


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(toy_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(toy_dataset, run, max_steps=6, save_every=2)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    (tmp_path / "kill.py").write_text(KILL_SCRIPT)
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "kill.py"), str(tmp_path / "cfg.json"), str(marker)],
                            cwd=REPO)
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), "the run never reached its second checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoints" / "step-000004.tmp").exists()
    assert (run / "checkpoints" / "latest").read_text() == "step-000002"
    train(cfg)  # resumes from step 2 and finishes
    uninterrupted = tmp_path / "clean"
    train(_cfg(toy_dataset, uninterrupted, max_steps=6, save_every=2))
    assert [_losses(run)[s] for s in (3, 4, 5, 6)] == [_losses(uninterrupted)[s] for s in (3, 4, 5, 6)]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(toy_dataset, tmp_path):
    with pytest.raises(NonFiniteLoss) as err:
        train(_cfg(toy_dataset, tmp_path / "run", max_steps=50, save_every=1, lr=1e6, max_grad_norm=None))
    m = re.search(r"at step (\d+); the last good checkpoint is .*step-(\d+)", str(err.value))
    assert m and int(m.group(2)) == int(m.group(1)) - 1
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == f"step-{int(m.group(2)):06d}"


def test_bad_configs_fail_before_the_first_step(toy_dataset, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train(_cfg(toy_dataset, tmp_path / "a", preset="huge"))
    with pytest.raises(ValueError, match="no camera"):
        train(_cfg(toy_dataset, tmp_path / "b", cameras=["top"]))
    assert main(["train", "--preset", "tiny", "--data", str(toy_dataset), "--set", "lrr=1"]) == 2
    assert "unknown training config keys ['lrr']" in capsys.readouterr().err


def test_checkpoint_with_other_action_size_is_refused(toy_dataset, tmp_path, tiny_reference_dir):
    with pytest.raises(ValueError, match="4-D actions but the model predicts 7-D"):
        train(TrainConfig.from_dict({**FAST, "preset": None, "checkpoint": str(tiny_reference_dir),
                                     "data": [str(toy_dataset)], "out": str(tmp_path / "run")}))
