"""The training run's configuration: one dataclass, loadable from JSON and overridable with key=value."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openvla.train.modes import MODES


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
    grad_checkpointing: bool | None = None  # None: on for models of 1B+ parameters (openvla-7b LoRA in 20 GB)
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

    def validate(self) -> None:
        """Refuse bad values before a run writes anything: one line per bad key, naming its valid values."""
        problems = [p for p in (_check_value(self, f) for f in dataclasses.fields(self)) if p]
        if self.preset is None and not self.checkpoint:
            problems.append("set either `preset` (train from scratch) or `checkpoint` (fine-tune)")
        if self.weights is not None and len(self.weights) != len(self.data):
            problems.append(f"weights has {len(self.weights)} entries for {len(self.data)} datasets; give one "
                            "per `data` folder, or null")
        if problems:
            raise ValueError("invalid training config:\n  " + "\n  ".join(problems))

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


# key -> (what is valid, test); types come from the field annotations, these add ranges and choices
_POSITIVE_INT = ("an integer >= 1", lambda v: v >= 1)
_RULES: dict[str, tuple[str, Any]] = {
    "mode": (f"one of {', '.join(MODES)}", lambda v: v in MODES),
    "schedule": ("one of constant, cosine", lambda v: v in ("constant", "cosine")),
    "precision": ("one of auto, fp32, bf16", lambda v: v in ("auto", "fp32", "bf16")),
    "strategy": ("one of auto, ddp, fsdp", lambda v: v in ("auto", "ddp", "fsdp")),
    "quantize_base": ("null, bnb4 (NF4) or bnb8", lambda v: v in (None, "bnb4", "bnb8")),
    "lr": ("a finite number > 0, e.g. 5e-4", lambda v: 0 < v < float("inf")),
    "batch_size": _POSITIVE_INT, "grad_accum": _POSITIVE_INT, "max_steps": _POSITIVE_INT,
    "save_every": _POSITIVE_INT, "log_every": _POSITIVE_INT, "keep_last": _POSITIVE_INT, "lora_rank": _POSITIVE_INT,
    "num_workers": ("an integer >= 0", lambda v: v >= 0),
    "warmup_steps": ("an integer >= 0", lambda v: v >= 0),
    "eval_every": ("an integer >= 0 (0 = off)", lambda v: v >= 0),
    "lora_alpha": ("an integer > 0", lambda v: v > 0),
    "lora_dropout": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "min_lr_ratio": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "max_grad_norm": ("a number > 0, or null for no clipping", lambda v: v is None or v > 0),
    "cameras": ("a non-empty list of camera names", lambda v: len(v) > 0),
}
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def _check_value(cfg: TrainConfig, f: dataclasses.Field) -> str | None:
    """One line when ``cfg``'s field ``f`` has the wrong type or is out of range; None when it is fine."""
    value = getattr(cfg, f.name)
    kinds = [k.strip().split("[")[0] for k in str(f.type).split("|")]
    what = _RULES.get(f.name, (f"a {' or '.join(kinds)}", None))[0]
    if value is None:
        return None if "None" in kinds else f"{f.name}=null is not valid; expected {what}"
    allowed = tuple(t for k in kinds for t in _TYPES.get(k, ()))
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        return f"{f.name}={value!r} is not valid; expected {what}"
    test = _RULES.get(f.name, (None, None))[1]
    if test is not None and not test(value):
        return f"{f.name}={value!r} is not valid; expected {what}"
    return None


# What a resumed run may change: when and where it saves, logs and evaluates, and how far it runs. Every other
# key changes what the steps compute, so the resumed run would not be the run its checkpoints belong to.
RESUME_SAFE = ("out", "max_steps", "save_every", "keep_last", "log_every", "num_workers", "tensorboard", "wandb",
               "wandb_project", "eval_every", "eval",
               "grad_checkpointing")  # recomputes the same activations: memory, not results


def resume_changes(saved: dict[str, Any], new: TrainConfig) -> list[str]:
    """``key: saved -> new`` for each change to ``saved`` (a run's train_config.json) that resuming cannot honour
    exactly; an empty list when ``new`` may resume it."""
    changes = []
    defaults = dataclasses.asdict(TrainConfig())
    for key, value in dataclasses.asdict(new).items():
        before = saved.get(key, defaults[key])
        unsafe = key not in RESUME_SAFE or (key == "max_steps" and new.schedule == "cosine")
        if unsafe and _normalised(key, before) != _normalised(key, value):
            why = " (the cosine schedule spans max_steps)" if key == "max_steps" else ""
            changes.append(f"{key}: {json.dumps(before)} -> {json.dumps(value)}{why}")
    return changes


def _normalised(key: str, value: Any) -> Any:
    """Paths compare by where they point, so `data/x` and `./data/x/` are the same folder."""
    if key == "checkpoint" and isinstance(value, str):
        return str(Path(value).expanduser().resolve())
    if key == "data" and isinstance(value, list):
        return [str(Path(v).expanduser().resolve()) for v in value]
    return value


def _check_keys(data: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(valid)}")
