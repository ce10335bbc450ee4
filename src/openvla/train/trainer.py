"""The training loop, top to bottom: data and model in, checkpoints, logs and a final model out."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from openvla.config import get_preset
from openvla.model.vla import VLA
from openvla.train.batching import Collator, sample_builder
from openvla.train.checkpointing import load_checkpoint, save_checkpoint
from openvla.train.config import TrainConfig
from openvla.train.distributed import DistEnv, all_mean, barrier, init_distributed, unwrap, wrap_model
from openvla.train.metrics import MetricsLogger, plot_curves, truncate_metrics
from openvla.train.modes import LoraSettings, apply_mode, count_parameters
from openvla.train.resume import check_model_unchanged, prepare_resume

MODEL_INPUTS = ("input_ids", "pixel_values", "attention_mask", "labels", "proprio", "actions", "action_mask")


LARGE_MODEL_PARAMETERS = 10**9  # from here on activations, not weights, decide whether a LoRA step fits


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# ------------------------------------------------------------------------------------------- building
def open_datasets(paths: list[str]) -> list[Any]:
    from openvla.data.lerobot import LeRobotDataset

    if not paths:
        raise ValueError("no training data: set `data` to one or more dataset folders (--set data=PATH)")
    return [LeRobotDataset(p) for p in paths]


def build_model(cfg: TrainConfig, datasets: list[Any], tokenizer_dir: Path | None = None) -> VLA:
    """From a checkpoint, or a preset with random weights and a tokenizer trained on the data's tasks
    (or the one saved in ``tokenizer_dir`` by the run being resumed)."""
    if cfg.checkpoint:
        vla = load_base(cfg)
        if len(vla.config.cameras) != len(cfg.cameras):
            raise ValueError(f"the checkpoint takes {len(vla.config.cameras)} camera(s) {vla.config.cameras}; "
                             f"`cameras` names {len(cfg.cameras)}: {cfg.cameras}")
        set_data_pipeline(vla.config, cfg)
        return vla
    if not cfg.preset:
        raise ValueError("set either `preset` (train from scratch) or `checkpoint` (fine-tune)")
    config = get_preset(cfg.preset)
    config.action_dim = datasets[0].action_dim
    for key, value in cfg.model.items():  # architecture overrides, e.g. {"action_chunk": 8}
        if not hasattr(config, key):
            raise ValueError(f"unknown model config key {key!r} in `model`")
        setattr(config, key, value)
    if config.proprio_dim == -1:  # "take the data's proprio size"
        config.proprio_dim = datasets[0].state_dim or 0
    set_data_pipeline(config, cfg)
    if tokenizer_dir is not None and tokenizer_dir.exists():
        from openvla.checkpoint.common import load_tokenizer

        torch.manual_seed(cfg.seed)
        return VLA(config, load_tokenizer(tokenizer_dir))
    tasks = sorted({t for d in datasets for t in d.tasks})
    return VLA.create(config, tasks, seed=cfg.seed)


def set_data_pipeline(config: Any, cfg: TrainConfig) -> None:
    """The processor settings that training on raw dataset frames implies, saved with the model so inference
    prepares frames the same way: the dataset's camera names, a Lanczos resize of each frame to the model's size
    (as the reference's data pipeline and its evaluation do) and, after random-crop augmentation, the centre
    crop at inference."""
    config.cameras = list(cfg.cameras)
    config.frame_resize = "lanczos"
    config.center_crop = bool(cfg.augment)


def base_dtype(cfg: TrainConfig) -> torch.dtype | None:
    """The dtype the base checkpoint loads in: fp32 or bf16 as asked; ``auto`` takes bf16 on a GPU and keeps the
    checkpoint's own on a CPU (a bf16 release stays bf16, memory-mapped). FSDP shards one dtype: float32."""
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {cfg.precision!r}; valid: auto, fp32, bf16")
    if cfg.precision != "auto":
        return torch.float32 if cfg.precision == "fp32" else torch.bfloat16
    if cfg.strategy == "fsdp":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_available() else None


def load_base(cfg: TrainConfig) -> VLA:
    """The checkpoint to fine-tune in ``base_dtype``; with ``quantize_base`` (LoRA only) its language model's
    linears become bitsandbytes 4-bit NF4 or 8-bit weights, quantised one at a time (QLoRA)."""
    vla = VLA.from_pretrained(cfg.checkpoint, dtype=base_dtype(cfg))
    if cfg.quantize_base:
        if cfg.quantize_base not in ("bnb4", "bnb8"):
            raise ValueError(f"unknown quantize_base {cfg.quantize_base!r}; valid: bnb4 (NF4), bnb8, null")
        if cfg.mode != "lora":
            raise ValueError("quantize_base needs mode=lora: quantised weights stay frozen, the adapters train")
        from openvla.model.quantize import quantize_bnb

        quantize_bnb(vla, int(cfg.quantize_base[3:]))
    return vla


def train_in_float32(model: nn.Module) -> bool:
    """Trainable parameters (adapters, new heads, fully trained weights) become float32, as does their
    optimiser state; the frozen base keeps its dtype. Returns whether the model held bf16 weights, which
    then run under bf16 autocast."""
    half = any(p.dtype == torch.bfloat16 for p in model.parameters())
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
    if half:  # autocast picks the compute dtype; peft's cast of each LoRA input to float32 (and autocast's
        # back to bf16) would keep a second copy of every adapted layer's input for the backward pass
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return half


def check_compatible(vla: VLA, datasets: list[Any], cfg: TrainConfig) -> None:
    """Fail before the first step when data and model disagree, saying what to change."""
    want = vla.config.action_dim
    for d in datasets:
        if d.action_dim != want:
            raise ValueError(f"dataset {d.root} has {d.action_dim}-D actions but the model predicts {want}-D; "
                             "train from a preset (it adapts) or pick a checkpoint trained on this action space")
        missing = [c for c in cfg.cameras if c not in d.cameras]
        if missing:
            raise ValueError(f"dataset {d.root} has no camera {missing}; cameras: {d.cameras} "
                             f"(--set cameras='[\"NAME\"]')")
        if vla.config.proprio_dim and d.state_dim != vla.config.proprio_dim:
            raise ValueError(f"dataset {d.root} has {d.state_dim}-D states; the model takes "
                             f"{vla.config.proprio_dim}-D proprio")
    if vla.tokenizer is None:
        raise ValueError("the model has no tokenizer; fine-tuning needs one saved with the checkpoint")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with decay on matrices only, and a constant or cosine schedule with linear warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            span = max(1, cfg.max_steps - cfg.warmup_steps)
            progress = min(1.0, (step - cfg.warmup_steps) / span)
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.schedule != "constant":
            raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: constant, cosine")
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_training_loader(vla: VLA, datasets: list[Any], cfg: TrainConfig, env: DistEnv):
    from openvla.data.loader import make_loader

    mc = vla.config
    # The loader delivers raw frames, actions and states; the model's processor does the rest in the workers.
    return make_loader(datasets, weights=cfg.weights, batch_size=cfg.batch_size, seed=cfg.seed,
                       rank=env.rank, world_size=env.world_size,
                       chunk=mc.action_chunk, cameras=tuple(cfg.cameras), with_state=mc.proprio_dim > 0,
                       num_workers=cfg.num_workers, frame_transform=sample_builder(vla.processor, cfg.augment),
                       collate=Collator(vla.llm.pad_token_id), image_size=None, normalization=None)


# ------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the folder of the final model."""
    cfg.validate()
    env = init_distributed()
    run = Path(cfg.out)
    resume_from = prepare_resume(run, cfg, env.world_size)  # refuses changed settings before anything is written
    torch.manual_seed(cfg.seed)
    datasets = open_datasets(cfg.data)
    vla = build_model(cfg, datasets, run / "tokenizer" if resume_from else None)
    check_compatible(vla, datasets, cfg)
    loader = make_training_loader(vla, datasets, cfg, env)
    vla.config.norm_stats.update(loader.statistics)
    if len(loader.statistics) == 1:  # a fine-tuned model un-normalises with its own dataset unless told otherwise
        vla.config.default_unnorm_key = next(iter(loader.statistics))
    if vla.config.action_head == "fast" and vla.config.fast_tokenizer is None:  # before workers copy the processor
        from openvla.train.fast import describe, fit_for_model

        fast = fit_for_model(vla, datasets)
        if env.is_main:
            print(describe(fast, vla.action_head.codec))
    if resume_from is not None:
        check_model_unchanged(run, json.loads(vla.config.to_json()))
    run.mkdir(parents=True, exist_ok=True)
    if env.is_main:
        vla.tokenizer.save_pretrained(str(run / "tokenizer"))
        (run / "train_config.json").write_text(cfg.to_json())
        (run / "vla_config.json").write_text(vla.config.to_json())

    model = apply_mode(vla, cfg.mode, LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout))
    half = train_in_float32(model)
    trainable, total = count_parameters(model)
    if env.is_main:
        print(f"mode {cfg.mode}: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
        (run / "parameters.json").write_text(json.dumps({"mode": cfg.mode, "trainable": trainable, "total": total}))
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (env.device.type == "cuda" or half))
    model.to(env.device)
    if cfg.grad_checkpointing or (cfg.grad_checkpointing is None and total >= LARGE_MODEL_PARAMETERS):
        vla.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = wrap_model(model, cfg.strategy, env, bf16)
    forward = torch.compile(model) if cfg.compile else model
    optimizer, scheduler = make_optimizer(model, cfg)

    start = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, env)
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
        if env.is_main:
            truncate_metrics(run / "metrics.jsonl", start)
            print(f"resumed from {resume_from} at step {start}")

    logger = MetricsLogger(run, cfg.tensorboard, cfg.wandb, cfg.wandb_project) if env.is_main else None
    batches = iter(loader)
    bar = tqdm(total=cfg.max_steps, initial=start, desc="train", disable=not env.is_main, dynamic_ncols=True)
    last_good = resume_from
    model.train()
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        wait = 0.0
        totals = {"loss": 0.0}
        for _ in range(cfg.grad_accum):
            t_data = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t_data
            inputs = {k: batch[k].to(env.device) for k in MODEL_INPUTS if k in batch}
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = forward(**inputs)
            if not torch.isfinite(out.loss):
                raise NonFiniteLoss(f"loss is {out.loss.item()} at step {step + 1}; the last good checkpoint is "
                                    f"{last_good or 'none (no checkpoint was written yet)'}")
            (out.loss / cfg.grad_accum).backward()
            totals["loss"] += out.loss.item() / cfg.grad_accum
            for k, v in out.metrics.items():  # whatever the head reports
                totals[k] = totals.get(k, 0.0) + v.item() / cfg.grad_accum
        grad_norm = _clip(model, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            values = {k: all_mean(v, env) for k, v in totals.items()}
            values.update(lr=scheduler.get_last_lr()[0], grad_norm=grad_norm, step_time_s=elapsed,
                          data_wait_s=wait,
                          samples_per_s=cfg.batch_size * cfg.grad_accum * env.world_size / elapsed)
            if logger is not None:
                logger.log(done, values)
            shown = {k: values[k] for k in ("loss", "action_l1") if k in values}
            bar.set_postfix({k.removeprefix("action_"): f"{v:.4f}" for k, v in shown.items()})
        bar.update(1)
        if done % cfg.save_every == 0 or done == cfg.max_steps:
            trainer_state = {"step": done, "scheduler": scheduler.state_dict(), "loader": loader.state_dict(),
                             "rng": torch.get_rng_state()}
            last_good = save_checkpoint(run, done, model, optimizer, trainer_state, env, cfg.keep_last)
        if cfg.eval_every and cfg.eval and done % cfg.eval_every == 0 and env.is_main:
            _evaluate(model, cfg, run, done, logger)
    bar.close()
    final = export_final(model, cfg, run, env)
    if logger is not None:
        logger.close()
        plot_curves(run / "metrics.jsonl", run / "curves.png")
    return final


def _clip(model: nn.Module, max_norm: float | None) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _base_vla(model: nn.Module) -> VLA:
    inner = unwrap(model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def _evaluate(model: nn.Module, cfg: TrainConfig, run: Path, step: int, logger: MetricsLogger | None) -> None:
    """Closed-loop evaluation in the configured simulator; its success rate goes into the log."""
    from openvla.model.policy import VLAPolicy
    from openvla.sim import evaluate

    model.eval()
    info = evaluate(VLAPolicy(_base_vla(model)), out_dir=run / "eval" / f"step-{step:06d}", **cfg.eval)
    model.train()
    if logger is not None:
        logger.log(step, {"eval_pc_success": info["overall"]["pc_success"]})


def export_final(model: nn.Module, cfg: TrainConfig, run: Path, env: DistEnv) -> Path:
    """Save the final model in our format; LoRA runs also save the adapter, and the final model is merged."""
    final = run / "final"
    inner = unwrap(model)
    if cfg.strategy == "fsdp" and env.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if env.is_main:
            vla = _base_vla(model)
            clean = VLA(vla.config, vla.tokenizer)
            clean.load_state_dict(full)
            clean.save_pretrained(final)
        barrier(env)
        return final
    if env.is_main:
        if hasattr(inner, "merge_and_unload"):
            from openvla.train.merge import merge_adapter, release_frozen_weights, save_adapter

            save_adapter(inner, run / "adapter")
            if cfg.checkpoint:  # streamed from the base's files: the weights are never in memory twice
                release_frozen_weights(inner)
                merge_adapter(cfg.checkpoint, run / "adapter", final, layout="native")
            else:
                inner.merge_and_unload().save_pretrained(final)
        else:
            inner.save_pretrained(final)
    barrier(env)
    return final
