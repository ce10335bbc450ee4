"""Resuming a run: which checkpoint, and whether the new settings may continue it exactly. Checked before the
run writes anything, so a refused resume leaves the run folder as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openvla.config import VLAConfig
from openvla.train.checkpointing import check_world_size, resumable_checkpoint
from openvla.train.config import RESUME_SAFE, TrainConfig, resume_changes

_NEW_RUN = ("put them back to resume (the run's settings are in {saved}), or start a new run in another `out` "
            "folder; a resumed run may change only: {safe}")


def prepare_resume(run: Path, cfg: TrainConfig, world_size: int) -> Path | None:
    """The checkpoint to resume from (None for a fresh run), after refusing settings it cannot continue."""
    checkpoint = resumable_checkpoint(run)
    if checkpoint is None:
        return None
    saved = run / "train_config.json"
    if saved.exists():
        _refuse(resume_changes(json.loads(saved.read_text()), cfg), run, saved)
    check_world_size(checkpoint, world_size)
    return checkpoint


def check_model_unchanged(run: Path, model_config: dict[str, Any]) -> None:
    """Refuse a resume whose data give another model (action or state size, statistics) than the saved one."""
    saved = run / "vla_config.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())
    try:  # through today's VLAConfig, so a field added since the run started takes its default, not a change
        before = json.loads(VLAConfig.from_dict(before).to_json())
    except (ValueError, KeyError, TypeError):
        pass
    changes = [f"{k}: {_short(before.get(k))} -> {_short(model_config.get(k))}"
               for k in sorted(set(before) | set(model_config)) if before.get(k) != model_config.get(k)]
    if changes:
        changes.append("(the model is built from the data: did a dataset folder change?)")
    _refuse(changes, run, saved)


def _refuse(changes: list[str], run: Path, saved: Path) -> None:
    if changes:
        raise ValueError(f"cannot resume {run} with changed settings:\n  " + "\n  ".join(changes) + "\n"
                         + _NEW_RUN.format(saved=saved, safe=", ".join(RESUME_SAFE)))


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
