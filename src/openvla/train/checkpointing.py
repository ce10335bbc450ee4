"""Run checkpoints with torch.distributed.checkpoint: sharded, atomic, the last K kept, exact resume.

Layout: ``RUN/checkpoints/step-000100/`` (DCP files for model + optimiser, ``trainer-rank{r}.pt`` with the
step, schedule, loader position and RNG states) and ``RUN/checkpoints/latest`` naming the newest complete
one. A checkpoint is written under ``step-XXXXXX.tmp`` and renamed only when every rank has finished, so a
crash never leaves a half-written checkpoint that resume would pick.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from openvla.train.distributed import DistEnv, barrier

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
    _write_files(tmp, {"model": model_sd, "optim": optim_sd}, trainer_state, env)
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


def load_checkpoint(directory: Path, model, optimizer, env: DistEnv) -> dict[str, Any]:
    """Restore model and optimiser in place; return this rank's trainer state."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_LOAD_OPTIONS)
    path = directory / f"trainer-rank{env.rank}.pt"
    if not path.exists():
        raise RuntimeError(f"{directory} was written by a run with another number of processes "
                           f"(no {path.name}); resume with the same world size")
    return torch.load(path, weights_only=False)
