"""torch.distributed set-up: one process on CPU or GPU, or many under torchrun (DDP or FSDP2)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistEnv:
    """Where this process sits: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistEnv:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=local, device=device)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_mean(value: float, env: DistEnv) -> float:
    """The mean of a scalar over all processes (for logging)."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


def wrap_model(model: nn.Module, strategy: str, env: DistEnv, bf16: bool) -> nn.Module:
    """DDP for small models, FSDP2 (``fully_shard`` per transformer block, then the root) for large ones."""
    if not env.distributed:
        return model
    if strategy in ("auto", "ddp"):
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.local_rank] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw = {"mp_policy": mp} if mp is not None else {}
        for module in model.modules():
            if type(module).__name__.endswith(("DecoderLayer", "EncoderLayer", "Layer")) and module is not model:
                if any(p.requires_grad for p in module.parameters()):
                    fully_shard(module, **kw)
        fully_shard(model, **kw)
        return model
    raise ValueError(f"unknown strategy {strategy!r}; valid: auto, ddp, fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) \
        else model
