"""Nothing silently wrong when a run starts or resumes: bad values, changed settings, repeated log lines,
damaged checkpoints and a full disk each stop with one clear message, before the run folder is touched."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from openvla.checkpoint.space import DiskFullError
from openvla.cli import main
from openvla.train.checkpointing import DamagedCheckpoint, check_checkpoint, complete_checkpoints
from openvla.train.config import TrainConfig
from openvla.train.metrics import read_metrics
from openvla.train.trainer import train

FAST = {"preset": "tiny", "batch_size": 4, "num_workers": 0, "log_every": 1, "lr": 1e-3, "seed": 3}


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**FAST, "data": [str(data)], "out": str(out), **kw})


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("key, value, expected", [
    ("batch_size", 0, "batch_size=0 is not valid; expected an integer >= 1"),
    ("lr", "abc", "lr='abc' is not valid; expected a finite number > 0"),
    ("lr", -1e-3, "lr=-0.001 is not valid; expected a finite number > 0"),
    ("strategy", "bogus", "strategy='bogus' is not valid; expected one of auto, ddp, fsdp"),
])
def test_bad_values_are_refused_before_anything_is_written(toy_dataset, tmp_path, key, value, expected):
    with pytest.raises(ValueError, match=expected):
        train(_cfg(toy_dataset, tmp_path / "run", **{key: value}))
    assert not (tmp_path / "run").exists()


def test_cli_names_every_bad_key_on_its_own_line(toy_dataset, tmp_path, capsys):
    code = main(["train", "--preset", "tiny", "--data", str(toy_dataset), "--out", str(tmp_path / "run"),
                 "--set", "lr=abc", "batch_size=0", "strategy=bogus"])
    err = capsys.readouterr().err
    assert code == 2
    assert "\n  lr='abc' is not valid" in err and "\n  batch_size=0 is not valid" in err
    assert "\n  strategy='bogus' is not valid" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def two_step_run(toy_dataset, tmp_path_factory) -> Path:
    """A run stopped at its step-2 checkpoint (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("resume") / "run"
    train(_cfg(toy_dataset, run, max_steps=2, save_every=2))
    return run


@pytest.mark.parametrize("change, listed", [
    ({"lr": 2e-3}, "lr: 0.001 -> 0.002"),
    ({"schedule": "cosine"}, 'schedule: "constant" -> "cosine"'),
    ({"mode": "lora"}, 'mode: "full" -> "lora"'),
    ({"batch_size": 2}, "batch_size: 4 -> 2"),
])
def test_resume_with_changed_settings_is_refused_and_the_run_left_alone(toy_dataset, two_step_run, change,
                                                                         listed):
    before = _files(two_step_run)
    with pytest.raises(ValueError, match="cannot resume") as err:
        train(_cfg(toy_dataset, two_step_run, max_steps=4, save_every=2, **change))
    assert listed in str(err.value)
    assert "another `out` folder" in str(err.value)
    assert _files(two_step_run) == before


def test_resume_with_a_cosine_schedule_refuses_a_new_max_steps(toy_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(toy_dataset, run, max_steps=2, save_every=2, schedule="cosine"))
    with pytest.raises(ValueError, match=r"max_steps: 2 -> 4 \(the cosine schedule spans max_steps\)"):
        train(_cfg(toy_dataset, run, max_steps=4, save_every=2, schedule="cosine"))


def test_resume_with_a_dataset_of_another_action_size_is_refused(toy_dataset, two_step_run, tmp_path,
                                                                  dataset_writer):
    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    other = dataset_writer(tmp_path / "toy7", episodes=6, action_dim=7)  # another folder, 7-D actions
    before = _files(run)
    with pytest.raises(ValueError, match="data: "):
        train(_cfg(other, run, max_steps=4, save_every=2))
    same_path = tmp_path / "data_copy"
    shutil.copytree(toy_dataset, same_path)
    run2 = tmp_path / "run2"
    train(_cfg(same_path, run2, max_steps=2, save_every=2))
    shutil.rmtree(same_path)
    shutil.copytree(other, same_path)
    before2 = _files(run2)
    with pytest.raises(ValueError, match="action_dim: 4 -> 7"):
        train(_cfg(same_path, run2, max_steps=4, save_every=2))
    assert _files(run) == before and _files(run2) == before2


def test_resume_applies_the_settings_declared_safe(toy_dataset, two_step_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    train(_cfg(toy_dataset, run, max_steps=3, save_every=3, keep_last=1, log_every=3, num_workers=1))
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["max_steps"], saved["keep_last"], saved["log_every"]) == (3, 1, 3)
    assert [p.name for p in complete_checkpoints(run)] == ["step-000003"]


def test_resume_truncates_the_metrics_to_the_checkpoint(toy_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(toy_dataset, run, max_steps=6, save_every=4))
    first = read_metrics(run / "metrics.jsonl")
    # as if killed after logging step 6 but before its checkpoint was written
    shutil.rmtree(run / "checkpoints" / "step-000006")
    (run / "checkpoints" / "latest").write_text("step-000004")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')  # and a line torn by the kill
    train(_cfg(toy_dataset, run, max_steps=6, save_every=4))
    again = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in again] == [r["loss"] for r in first]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_checkpoint_names_its_file_and_resume_falls_back(toy_dataset, tmp_path):
    run = tmp_path / "run"
    train(_cfg(toy_dataset, run, max_steps=4, save_every=2))
    first = {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl")}
    newest = run / "checkpoints" / "step-000004"
    meta_copy = tmp_path / "meta"
    shutil.copytree(newest, meta_copy)
    _truncate(meta_copy / ".metadata")
    with pytest.raises(DamagedCheckpoint, match=r"meta/\.metadata cannot be read"):
        check_checkpoint(meta_copy)
    shard = next(newest.glob("*.distcp"))
    _truncate(shard)
    with pytest.raises(DamagedCheckpoint, match=rf"{shard.name} is cut short: \d+ of \d+ bytes"):
        check_checkpoint(newest)
    with pytest.warns(RuntimeWarning, match=rf"skipping damaged checkpoint step-000004: .*{shard.name} is cut"):
        train(_cfg(toy_dataset, run, max_steps=4, save_every=2))
    again = {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl")}
    assert again == first  # steps 3 and 4 were run again from step 2, exactly
    check_checkpoint(newest)  # and rewritten whole


def test_a_full_disk_says_so_and_leaves_no_partial_checkpoint(toy_dataset, tmp_path, monkeypatch):
    import torch.distributed.checkpoint.filesystem as fs

    def full(transforms, stream, *args, **kwargs):  # DCP's shard writer, after it opened the shard file
        stream.write(b"x" * 598)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "_write_item", full)
    run = tmp_path / "run"
    with pytest.raises(DiskFullError, match=r"no space left on \S+ \(mounted at .*\) while writing .*step-000002"
                                            r"\.tmp: need ~\d+\.\d [KM]B"):
        train(_cfg(toy_dataset, run, max_steps=2, save_every=2))
    assert list((run / "checkpoints").iterdir()) == []


def test_a_short_write_with_too_little_room_is_a_full_disk(tmp_path, monkeypatch):
    from openvla.checkpoint import space

    class Usage:
        free = 100

    monkeypatch.setattr(space.shutil, "disk_usage", lambda path: Usage())
    err = space.disk_full_error(RuntimeError("unexpected pos 704 vs 598"), tmp_path / "ck", 5000)
    assert isinstance(err, DiskFullError) and "need ~4.9 KB" in str(err) and "100 bytes free" in str(err)
    assert space.disk_full_error(RuntimeError("unexpected pos 704 vs 598"), tmp_path / "ck", 50) is None


def test_when_every_checkpoint_is_damaged_resume_stops_and_says_so(tmp_path):
    from openvla.train.checkpointing import resumable_checkpoint

    run = tmp_path / "run"
    for step in (2, 4):
        folder = run / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / ".metadata").write_bytes(b"\x80\x04cut")
    (run / "checkpoints" / "latest").write_text("step-000004")
    with pytest.warns(RuntimeWarning, match="skipping damaged checkpoint step-000002"):
        with pytest.raises(DamagedCheckpoint, match="every checkpoint in .* is damaged"):
            resumable_checkpoint(run)


def test_a_model_field_added_since_the_run_started_does_not_block_its_resume(toy_dataset, two_step_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    saved = json.loads((run / "vla_config.json").read_text())
    assert saved.pop("flow_steps") == 10  # as written by a version without that field (whose default it has)
    (run / "vla_config.json").write_text(json.dumps(saved))
    train(_cfg(toy_dataset, run, max_steps=3, save_every=3))
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
