"""Training logs: a JSONL file in the run folder, optional TensorBoard / W&B, and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CURVES = ("loss", "action_accuracy", "action_l1", "lr", "grad_norm", "samples_per_s")


class MetricsLogger:
    """Append one JSON line per logged step; mirror to TensorBoard / Weights & Biases when asked."""

    def __init__(self, run: Path, tensorboard: bool = False, wandb: bool = False, project: str = "openvla",
                 config: dict[str, Any] | None = None) -> None:
        self.path = run / "metrics.jsonl"
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise RuntimeError("tensorboard logging needs the `tensorboard` package: pip install tensorboard") \
                    from err
            self._tb = SummaryWriter(str(run / "tensorboard"))
        if wandb:
            try:
                import wandb as wb
            except ImportError as err:
                raise RuntimeError("W&B logging needs `wandb` (pip install wandb); set WANDB_MODE=offline "
                                   "to log without network") from err
            self._wandb = wb.init(project=project, dir=str(run), config=config or {})

    def log(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self._tb.add_scalar(f"train/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines logged after ``step`` (a resumed run logs the steps after its checkpoint again) and a line
    torn by a kill."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _step(line) is not None and _step(line) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def plot_curves(metrics_path: Path, out_png: Path) -> Path | None:
    """One panel per logged curve; returns None when there is nothing to plot."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CURVES if any(n in r for r in rows)]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_title(name)
        ax.set_xlabel("step")
        if name == "loss":
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
