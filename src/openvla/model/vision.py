"""The vision tower: one or two transformers ViTs whose patch features are fused on the channel axis."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from openvla.config import VisionBackboneConfig
from openvla.model.ops import layer_norm, linear


def _vit_settings(cfg: VisionBackboneConfig) -> dict:
    """The settings every transformers ViT takes, configured like the timm ones OpenVLA uses (exact GELU,
    LayerNorm eps 1e-6)."""
    return dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
                hidden_act="gelu", layer_norm_eps=1e-6)


def _dinov2(cfg: VisionBackboneConfig) -> nn.Module:
    if cfg.mlp_dim % cfg.hidden_size:
        raise ValueError(f"DINOv2 MLP width must be a multiple of its width, got {cfg.mlp_dim}/{cfg.hidden_size}")
    return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        num_register_tokens=cfg.num_registers, mlp_ratio=cfg.mlp_dim // cfg.hidden_size, layerscale_value=1e-5,
        **_vit_settings(cfg)))


def _siglip(cfg: VisionBackboneConfig) -> nn.Module:
    return SiglipVisionModel(SiglipVisionConfig(vision_use_head=cfg.use_head, **_vit_settings(cfg)))


VISION_BACKBONES = {"dinov2": _dinov2, "siglip": _siglip}  # VisionBackboneConfig.kind -> builder


def build_vit(cfg: VisionBackboneConfig) -> nn.Module:
    """The transformers ViT registered for ``cfg.kind``."""
    if cfg.kind not in VISION_BACKBONES:
        raise ValueError(f"unknown vision backbone kind {cfg.kind!r}; valid kinds: {sorted(VISION_BACKBONES)}")
    return VISION_BACKBONES[cfg.kind](cfg)


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

    def _features(self, vit: nn.Module, cfg: VisionBackboneConfig, pixels: torch.Tensor,
                  film: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
        hidden = _embeddings(vit, pixels)
        for i, layer in enumerate(_layers(vit)[:cfg.blocks_run]):
            if film is not None:
                hidden = vit_block(layer, hidden, *film[i])
            elif torch.is_grad_enabled():  # training: through the block's __call__, where FSDP's hooks run
                hidden = layer(hidden, None)
                hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # transformers < 4.54
            else:
                hidden = vit_block(layer, hidden)
        return hidden[:, cfg.num_prefix_tokens:]

    def forward(self, pixel_values: torch.Tensor,
                film: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None) -> torch.Tensor:
        """Fused patch features; ``film`` (OFT+): (gamma, beta) [B, width] per block run, per ViT."""
        size = self.configs[0].image_size
        if pixel_values.shape[1] != self.in_channels or pixel_values.shape[-2:] != (size, size):
            raise ValueError(f"pixel_values must be [B, {self.in_channels}, {size}, {size}] (3 channels per "
                             f"backbone), got shape {tuple(pixel_values.shape)}")
        vits = [self.featurizer] + ([self.fused_featurizer] if self.fused_featurizer is not None else [])
        feats = [self._features(vit, cfg, pixel_values[:, 3 * i:3 * i + 3], None if film is None else film[i])
                 for i, (vit, cfg) in enumerate(zip(vits, self.configs, strict=True))]
        return torch.cat(feats, dim=-1)


def _patchify(conv: nn.Conv2d, pixels: torch.Tensor) -> torch.Tensor:
    """A patch convolution (kernel = stride = patch) as one matmul over flattened patches: [B, N, width].
    At small sizes the convolution's setup costs more than its arithmetic."""
    b, c, h, w = pixels.shape
    p = conv.kernel_size[0]
    patches = pixels.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
    return F.linear(patches.to(conv.weight.dtype), conv.weight.reshape(conv.out_channels, -1), conv.bias)


def _embeddings(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The ViT's token embeddings at its native size: DINOv2 [CLS, registers, patches], SigLIP patches."""
    emb = vit.embeddings
    if not hasattr(emb, "register_tokens"):  # SigLIP
        return _patchify(emb.patch_embedding, pixels) + emb.position_embedding.weight
    b = pixels.shape[0]
    x = _patchify(emb.patch_embeddings.projection, pixels)
    x = torch.cat([emb.cls_token.expand(b, -1, -1), x], dim=1) + emb.position_embeddings
    return torch.cat([x[:, :1], emb.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Bidirectional multi-head attention through the module's own projections (DINOv2: o_proj, scaling;
    SigLIP: out_proj, scale)."""
    b, n, _ = x.shape
    q = linear(attn.q_proj, x).view(b, n, -1, attn.head_dim).transpose(1, 2)
    k = linear(attn.k_proj, x).view(b, n, -1, attn.head_dim).transpose(1, 2)
    v = linear(attn.v_proj, x).view(b, n, -1, attn.head_dim).transpose(1, 2)
    dropout = attn.attention_dropout if hasattr(attn, "attention_dropout") else attn.dropout
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if attn.training else 0.0,
                                         scale=attn.scaling if hasattr(attn, "scaling") else attn.scale)
    out = out.transpose(1, 2).reshape(b, n, -1)
    return linear(attn.o_proj if hasattr(attn, "o_proj") else attn.out_proj, out)


def vit_block(layer: nn.Module, x: torch.Tensor, gamma: torch.Tensor | None = None,
              beta: torch.Tensor | None = None) -> torch.Tensor:
    """One transformers ViT block (DINOv2 or SigLIP) written out as its operations, through its own modules:
    x += attn(norm1(x)); x += mlp(norm2(x)), with DINOv2's layer scales. It computes what the block's forward
    does without the attention dispatch around it (the block is most of the vision tower's time at small
    sizes). With ``gamma``/``beta`` [B, width], OFT's FiLM sits between the residuals: x = x * (1 + gamma) + beta.
    """
    dino = hasattr(layer, "layer_scale1")
    norm1, attention, norm2 = ((layer.norm1, layer.attention, layer.norm2) if dino
                               else (layer.layer_norm1, layer.self_attn, layer.layer_norm2))
    h = _attention(attention, layer_norm(norm1, x))
    x = x + (h * layer.layer_scale1.lambda1 if dino else h)
    if gamma is not None:
        x = x * (1 + gamma[:, None]) + beta[:, None]
    mlp = layer.mlp
    h = linear(mlp.fc2, mlp.activation_fn(linear(mlp.fc1, layer_norm(norm2, x))))
    return x + (h * layer.layer_scale2.lambda1 if dino else h)
