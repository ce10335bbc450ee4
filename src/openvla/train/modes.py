"""What a run trains: full, LoRA, frozen vision, last layer, or sandwich (the OpenVLA paper's comparison)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

MODES = ("full", "lora", "frozen-vision", "last-layer", "sandwich")


@dataclass
class LoraSettings:
    """The reference's LoRA: r=32, alpha=min(r, 16), no dropout, gaussian init, all linear layers."""

    rank: int = 32
    alpha: int = 16
    dropout: float = 0.0


def _last_layer_modules(model: nn.Module) -> list[nn.Module]:
    """The LM's input embeddings, last decoder layer and output head (Prismatic's last-layer set)."""
    lm = model.language_model
    return [lm.get_input_embeddings(), lm.model.layers[-1], lm.get_output_embeddings()]


def unused_module_prefixes(model: nn.Module) -> list[str]:
    """Parameters that never see gradients (the model says which: ``VLA.unused_prefixes``)."""
    return model.unused_prefixes()


def lora_targets(model: nn.Module) -> list[str]:
    """Every nn.Linear the forward pass uses (LLM incl. lm_head, projector, ViT blocks up to the feature block),
    except OFT's new modules, which train in full."""
    skip = tuple(unused_module_prefixes(model)) + tuple(f"{name}." for name in model.new_modules())
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not (name + ".").startswith(skip)]


def apply_mode(model: nn.Module, mode: str, lora: LoraSettings | None = None) -> nn.Module:
    """Set requires_grad for ``mode``; for LoRA, return the peft-wrapped model (base weights frozen)."""
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; valid modes: {list(MODES)}")
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = lora or LoraSettings()
        targets = [re.escape(n) for n in lora_targets(model)]
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            init_lora_weights="gaussian", target_modules="^(" + "|".join(targets) + ")$")
        peft_model = get_peft_model(model, config)
        _train_new_modules(model)
        return peft_model
    model.requires_grad_(mode == "full")
    if mode == "frozen-vision":
        model.requires_grad_(True)
        model.vision_backbone.requires_grad_(False)
    elif mode == "last-layer":
        for m in _last_layer_modules(model):
            m.requires_grad_(True)
    elif mode == "sandwich":
        model.vision_backbone.requires_grad_(True)
        model.projector.requires_grad_(True)
        for m in _last_layer_modules(model):
            m.requires_grad_(True)
    _train_new_modules(model)
    _freeze_unused(model)
    return model


def _train_new_modules(model: nn.Module) -> None:
    """OFT's modules that a pretrained checkpoint lacks (action head, proprio projector, slot queries, FiLM)
    train in full in every mode, as OFT trains them beside LoRA."""
    for name in model.new_modules():
        getattr(model, name).requires_grad_(True)  # a module, or the slot queries' Parameter


def _freeze_unused(model: nn.Module) -> None:
    """No optimiser state or DDP bucket for parameters the loss cannot reach."""
    skip = tuple(unused_module_prefixes(model))
    for name, p in model.named_parameters():
        if (name + ".").startswith(skip) or name.startswith(skip):
            p.requires_grad_(False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
