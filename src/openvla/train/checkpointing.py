"""Run checkpoints with torch.distributed.checkpoint: sharded, atomic, the last K kept, exact resume.

Layout: ``RUN/checkpoints/step-000100/`` (DCP files for model + optimiser, ``trainer-rank{r}.pt`` with the
step, schedule, loader position and RNG states) and ``RUN/checkpoints/latest`` naming the newest complete
one. A checkpoint is written under ``step-XXXXXX.tmp`` and renamed only when every rank has finished, so a
crash never leaves a half-written checkpoint that resume would pick.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from openvla.checkpoint.space import disk_full_error
from openvla.train.distributed import DistEnv, barrier

_FAILURES = (Exception, CheckpointException)  # DCP wraps each rank's error in a BaseException
_OPTIONS = StateDictOptions(ignore_frozen_params=True)
# Frozen parameters come from the model's own start (preset seed or base checkpoint), not the checkpoint;
# a trainable one missing from the checkpoint still fails in dcp.load.
_LOAD_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def _dir(run: Path) -> Path:
    return run / "checkpoints"


def save_checkpoint(run: Path, step: int, model, optimizer, trainer_state: dict[str, Any], env: DistEnv,
                    keep_last: int) -> Path:
    """Write step ``step`` atomically and prune all but the last ``keep_last`` complete checkpoints."""
    root = _dir(run)
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    try:
        _write_files(tmp, state, trainer_state, env)
    except _FAILURES as err:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint would fill the disk for the rerun too
        full = disk_full_error(err, tmp, _nbytes(state))
        if full is not None:
            raise full from err
        raise
    barrier(env)
    if env.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        pointer = root / "latest.tmp"
        pointer.write_text(final.name)
        pointer.replace(root / "latest")
        for old in complete_checkpoints(run)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final


def _write_files(directory: Path, state: dict[str, Any], trainer_state: dict[str, Any], env: DistEnv) -> None:
    dcp.save(state, checkpoint_id=str(directory))
    torch.save(trainer_state, directory / f"trainer-rank{env.rank}.pt")


def _nbytes(state: Any) -> int:
    """About what a checkpoint of ``state`` takes: every tensor's bytes (a DTensor counts whole) and the ~1.5 KB
    record DCP writes around each one."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() + 1536
    if isinstance(state, dict):
        return sum(_nbytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_nbytes(v) for v in state)
    return 0


def complete_checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints, oldest first (``.tmp`` leftovers of a crash are ignored)."""
    root = _dir(run)
    if not root.exists():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest complete one if the pointer is missing or stale."""
    pointer = _dir(run) / "latest"
    if pointer.exists():
        candidate = _dir(run) / pointer.read_text().strip()
        if candidate.is_dir():
            return candidate
    done = complete_checkpoints(run)
    return done[-1] if done else None


class DamagedCheckpoint(RuntimeError):
    """A checkpoint file is missing, cut short or unreadable; the message names it."""


def check_checkpoint(directory: Path) -> None:
    """Raise DamagedCheckpoint naming the file when ``.metadata``, a shard or a trainer state is missing,
    shorter than the metadata says, or unreadable. Cheap: reads the metadata and file sizes."""
    meta = directory / ".metadata"
    if not meta.is_file():
        raise DamagedCheckpoint(f"{meta} is missing")
    try:
        storage = FileSystemReader(str(directory)).read_metadata().storage_data
    except _FAILURES as err:
        raise DamagedCheckpoint(f"{meta} cannot be read ({type(err).__name__}: {err}); it is damaged or cut "
                                "short") from err
    need: dict[str, int] = {}
    for info in storage.values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(need.items()):
        path = directory / name
        have = path.stat().st_size if path.is_file() else None
        if have is None or have < size:
            what = "is missing" if have is None else f"is cut short: {have} of {size} bytes"
            raise DamagedCheckpoint(f"{path} {what}")
    for path in sorted(directory.glob("trainer-rank*.pt")):
        try:
            torch.load(path, weights_only=False)
        except _FAILURES as err:
            raise DamagedCheckpoint(f"{path} cannot be read ({type(err).__name__}: {err})") from err


def resumable_checkpoint(run: Path) -> Path | None:
    """The checkpoint to resume from: ``latest`` if it is whole, else the newest whole one before it.
    Each damaged one is skipped with a warning naming its bad file (it is left on disk for inspection)."""
    latest = latest_checkpoint(run)
    if latest is None:
        return None
    older = [p for p in reversed(complete_checkpoints(run)) if p.name < latest.name]
    for candidate in [latest, *older]:
        try:
            check_checkpoint(candidate)
            return candidate
        except DamagedCheckpoint as err:
            warnings.warn(f"skipping damaged checkpoint {candidate.name}: {err}", RuntimeWarning, stacklevel=2)
    raise DamagedCheckpoint(f"every checkpoint in {_dir(run)} is damaged (see the warnings); delete that folder "
                            "to start the run again, or start a new run with another `out` folder")


def check_world_size(directory: Path, world_size: int) -> None:
    """Refuse, before anything is written, to resume a checkpoint made by another number of processes."""
    saved = len(list(directory.glob("trainer-rank*.pt")))
    if saved != world_size:
        raise ValueError(f"{directory} was written by {saved} processes and this run has {world_size}; resume "
                         f"with {saved} (torchrun --nproc_per_node ...), or start a new run with another `out`")


def load_checkpoint(directory: Path, model, optimizer, env: DistEnv) -> dict[str, Any]:
    """Restore model and optimiser in place; return this rank's trainer state."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    try:
        dcp.load(state, checkpoint_id=str(directory))
    except _FAILURES as err:
        raise RuntimeError(f"cannot load {directory}: {type(err).__name__}: {err}") from err
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_LOAD_OPTIONS)
    path = directory / f"trainer-rank{env.rank}.pt"
    if not path.exists():
        raise RuntimeError(f"{directory} was written by a run with another number of processes "
                           f"(no {path.name}); resume with the same world size")
    return torch.load(path, weights_only=False)
