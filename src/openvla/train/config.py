"""The training run's configuration: one dataclass, loadable from JSON and overridable with key=value."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """Every knob of a run. Saved as ``train_config.json`` in the run folder."""

    # model: a preset (random init, from scratch) or a checkpoint (ours or the OpenVLA layout)
    preset: str | None = "small"
    checkpoint: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # VLAConfig overrides for a preset (OFT knobs, sizes)
    # data: our (LeRobot-format) dataset folders, optionally weighted
    data: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    cameras: list[str] = field(default_factory=lambda: ["image"])  # primary first, then wrist cameras
    augment: bool = False
    num_workers: int = 2
    # what to train
    mode: str = "full"  # full | lora | frozen-vision | last-layer | sandwich
    lora_rank: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    # optimisation
    lr: float = 5e-4
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of lr
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    batch_size: int = 8  # per process, per micro-step
    grad_accum: int = 1
    max_steps: int = 1000
    seed: int = 7
    precision: str = "auto"  # the base's dtype: auto (bf16 on GPU, the checkpoint's on CPU) | fp32 | bf16
    quantize_base: str | None = None  # LoRA on a bitsandbytes-quantised frozen base (QLoRA): bnb4 (NF4) | bnb8
    grad_checkpointing: bool = False
    compile: bool = False
    strategy: str = "auto"  # auto (ddp when distributed) | ddp | fsdp
    # the run folder, checkpoints and logs
    out: str = "runs/default"
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "openvla"
    # closed-loop evaluation during training (0 = off); keys are passed to openvla.sim.evaluate
    eval_every: int = 0
    eval: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        _check_keys(data)
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_overrides(self, pairs: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings; values parse as JSON when they can (numbers, lists, null, true)."""
        data = dataclasses.asdict(self)
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"--set expects key=value, got {pair!r}")
            key, raw = pair.split("=", 1)
            _check_keys({key: None})
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if key in ("data",) and isinstance(value, str):
                value = value.split(",")
            data[key] = value
        return TrainConfig.from_dict(data)


def _check_keys(data: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(valid)}")
