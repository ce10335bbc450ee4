"""The vision tower: one or two transformers ViTs whose patch features are fused on the channel axis."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from openvla.config import VisionBackboneConfig


def build_vit(cfg: VisionBackboneConfig) -> nn.Module:
    """A transformers ViT configured like the timm one OpenVLA uses (exact GELU, LayerNorm eps 1e-6)."""
    common = dict(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    if cfg.kind == "dinov2":
        if cfg.mlp_dim % cfg.hidden_size:
            raise ValueError(f"DINOv2 MLP width must be a multiple of its width, got {cfg.mlp_dim}/{cfg.hidden_size}")
        hf = Dinov2WithRegistersConfig(num_register_tokens=cfg.num_registers,
                                       mlp_ratio=cfg.mlp_dim // cfg.hidden_size, layerscale_value=1e-5, **common)
        return Dinov2WithRegistersModel(hf)
    if cfg.kind == "siglip":
        return SiglipVisionModel(SiglipVisionConfig(vision_use_head=cfg.use_head, **common))
    raise ValueError(f"unknown vision backbone kind {cfg.kind!r}; valid kinds: ['dinov2', 'siglip']")


def _layers(vit: nn.Module) -> nn.ModuleList:
    return vit.encoder.layer if hasattr(vit.encoder, "layer") else vit.encoder.layers


class VisionBackbone(nn.Module):
    """Runs each ViT up to its feature block and concatenates patch features: [B, N, sum(widths)].

    ``featurizer`` is the first ViT (DINOv2 in OpenVLA), ``fused_featurizer`` the optional second (SigLIP),
    the names of the released checkpoint. ``pixel_values`` stacks 3 channels per ViT, in the same order.
    """

    def __init__(self, configs: list[VisionBackboneConfig]) -> None:
        super().__init__()
        if not 1 <= len(configs) <= 2:
            raise ValueError(f"the vision tower takes one or two backbones, got {len(configs)}")
        if len({(c.image_size, c.patch_size) for c in configs}) != 1:
            raise ValueError("fused backbones must share image and patch size (their patch grids are fused)")
        self.configs = configs
        self.featurizer = build_vit(configs[0])
        self.fused_featurizer = build_vit(configs[1]) if len(configs) == 2 else None

    @property
    def in_channels(self) -> int:
        return 3 * len(self.configs)

    def _features(self, vit: nn.Module, cfg: VisionBackboneConfig, pixels: torch.Tensor) -> torch.Tensor:
        layers = _layers(vit)
        stop = cfg.feature_layer % cfg.depth + 1  # blocks after the feature block are never run
        hidden = vit.embeddings(pixels)
        for layer in layers[:stop]:
            hidden = layer(hidden, None)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden[:, cfg.num_prefix_tokens:]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.in_channels:
            raise ValueError(f"pixel_values must have {self.in_channels} channels (3 per backbone), "
                             f"got shape {tuple(pixel_values.shape)}")
        feats = [self._features(self.featurizer, self.configs[0], pixel_values[:, :3])]
        if self.fused_featurizer is not None:
            feats.append(self._features(self.fused_featurizer, self.configs[1], pixel_values[:, 3:6]))
        return torch.cat(feats, dim=-1)
