"""What a run trains: full, LoRA, frozen vision, last layer, or sandwich (the OpenVLA paper's comparison)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

MODES = ("full", "lora", "frozen-vision", "last-layer", "sandwich")
NEW_MODULES = ("action_head", "proprio_projector", "action_queries", "film", "noisy_action_projector")


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
    """Parameters that never see gradients: ViT blocks after the feature block, final ViT norms, the SigLIP
    head, DINOv2's mask token, and the LM head when a continuous head (L1, diffusion) makes the actions."""
    prefixes = ["vision_backbone.featurizer.embeddings.mask_token"]
    if model.config.action_head in ("l1", "diffusion"):
        prefixes.append("language_model.lm_head.")
    vb = model.vision_backbone
    for attr, cfg in (("featurizer", vb.configs[0]), ("fused_featurizer", vb.configs[-1])):
        vit = getattr(vb, attr)
        if vit is None:
            continue
        layers = "encoder.layer" if hasattr(vit.encoder, "layer") else "encoder.layers"
        first_unused = cfg.blocks_run
        prefixes += [f"vision_backbone.{attr}.{layers}.{i}." for i in range(first_unused, cfg.depth)]
        prefixes += [f"vision_backbone.{attr}.{n}" for n in ("layernorm.", "post_layernorm.", "head.")]
    return prefixes


def lora_targets(model: nn.Module) -> list[str]:
    """Every nn.Linear the forward pass uses (LLM incl. lm_head, projector, ViT blocks up to the feature block),
    except OFT's new modules, which train in full."""
    skip = tuple(unused_module_prefixes(model)) + tuple(f"{name}." for name in NEW_MODULES)
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
    for name in NEW_MODULES:
        module = getattr(model, name, None)
        if module is not None:
            module.requires_grad_(True)


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
