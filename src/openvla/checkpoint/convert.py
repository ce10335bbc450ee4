"""State-dict conversion between the released OpenVLA layout (timm ViT names) and ours (transformers ViTs).

Works on any tensors, meta tensors included, so the 7B key map can be checked without weights.
Reference -> ours is exact; ours -> reference folds DINOv2's CLS position embedding into the CLS token
(timm adds no position to it) and drops the unused DINOv2 mask token.
"""

from __future__ import annotations

import re

import torch

DINO = "vision_backbone.featurizer."
SIGLIP = "vision_backbone.fused_featurizer."

# timm block sub-key -> (our DINOv2 sub-key, our SigLIP sub-key)
_BLOCK = {
    "norm1.weight": ("norm1.weight", "layer_norm1.weight"),
    "norm1.bias": ("norm1.bias", "layer_norm1.bias"),
    "norm2.weight": ("norm2.weight", "layer_norm2.weight"),
    "norm2.bias": ("norm2.bias", "layer_norm2.bias"),
    "attn.proj.weight": ("attention.o_proj.weight", "self_attn.out_proj.weight"),
    "attn.proj.bias": ("attention.o_proj.bias", "self_attn.out_proj.bias"),
    "mlp.fc1.weight": ("mlp.fc1.weight", "mlp.fc1.weight"),
    "mlp.fc1.bias": ("mlp.fc1.bias", "mlp.fc1.bias"),
    "mlp.fc2.weight": ("mlp.fc2.weight", "mlp.fc2.weight"),
    "mlp.fc2.bias": ("mlp.fc2.bias", "mlp.fc2.bias"),
    "ls1.scale_factor": ("layer_scale1.lambda1", None),
    "ls2.scale_factor": ("layer_scale2.lambda1", None),
}
# timm top-level key -> (ours for DINOv2, ours for SigLIP); None: not in that backbone
_TOP = {
    "cls_token": ("embeddings.cls_token", None),
    "reg_token": ("embeddings.register_tokens", None),
    "patch_embed.proj.weight": ("embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight"),
    "patch_embed.proj.bias": ("embeddings.patch_embeddings.projection.bias", "embeddings.patch_embedding.bias"),
    "norm.weight": ("layernorm.weight", "post_layernorm.weight"),
    "norm.bias": ("layernorm.bias", "post_layernorm.bias"),
    "attn_pool.latent": (None, "head.probe"),
    "attn_pool.proj.weight": (None, "head.attention.out_proj.weight"),
    "attn_pool.proj.bias": (None, "head.attention.out_proj.bias"),
    "attn_pool.norm.weight": (None, "head.layernorm.weight"),
    "attn_pool.norm.bias": (None, "head.layernorm.bias"),
    "attn_pool.mlp.fc1.weight": (None, "head.mlp.fc1.weight"),
    "attn_pool.mlp.fc1.bias": (None, "head.mlp.fc1.bias"),
    "attn_pool.mlp.fc2.weight": (None, "head.mlp.fc2.weight"),
    "attn_pool.mlp.fc2.bias": (None, "head.mlp.fc2.bias"),
}
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")
# Ours with no reference counterpart: DINOv2's masked-image-modelling token, used only with bool_masked_pos.
UNUSED_OURS = ("vision_backbone.featurizer.embeddings.mask_token",)


def _layer_prefix(which: int, i: str) -> str:
    return f"encoder.layer.{i}." if which == 0 else f"encoder.layers.{i}."


def _vit_to_ours(sd: dict[str, torch.Tensor], which: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One timm ViT's sub-dict (keys without prefix) -> (our keys, keys not understood)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    attn = "attention" if which == 0 else "self_attn"
    for key, t in sd.items():
        key = key.replace(".gamma", ".scale_factor")  # Prismatic-native LayerScale name
        m = _BLOCK_RE.fullmatch(key)
        if m:
            i, sub = m.groups()
            pre = _layer_prefix(which, i)
            if sub in ("attn.qkv.weight", "attn.qkv.bias"):
                kind = sub.rsplit(".", 1)[1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0), strict=True):
                    out[f"{pre}{attn}.{name}.{kind}"] = part
                continue
            target = _BLOCK.get(sub, (None, None))[which]
            if target is None:
                unknown.append(key)
            else:
                out[pre + target] = t
        elif key == "pos_embed":
            if which == 0:  # ours carries a CLS position; timm adds none to CLS, so it is zero
                out["embeddings.position_embeddings"] = torch.cat([t.new_zeros(1, 1, t.shape[-1]), t], dim=1)
            else:
                out["embeddings.position_embedding.weight"] = t[0]
        elif key in ("attn_pool.q.weight", "attn_pool.q.bias"):
            kind = key.rsplit(".", 1)[1]
            kv = sd[f"attn_pool.kv.{kind}"]
            out[f"head.attention.in_proj_{kind}"] = torch.cat([t, kv], dim=0)
        elif key.startswith("attn_pool.kv."):
            continue  # consumed with attn_pool.q
        else:
            target = _TOP.get(key, (None, None))[which]
            if target is None:
                unknown.append(key)
            else:
                out[target] = t
    return out, unknown


_KIND_INDEX = {"dinov2": 0, "siglip": 1}


def openvla_to_ours(state_dict: dict[str, torch.Tensor], kinds: tuple[str, ...] = ("dinov2", "siglip"),
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Released-layout state dict -> ours. ``kinds`` names the featurizer's (and fused featurizer's) ViT.

    Returns (converted, reference keys that were not understood)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    prefixes = (DINO, SIGLIP)[: len(kinds)]
    vits: dict[str, dict[str, torch.Tensor]] = {p: {} for p in prefixes}
    for key, t in state_dict.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None:
            vits[prefix][key[len(prefix):]] = t
        elif key.startswith(("projector.", "language_model.")):
            out[key] = t
        else:
            unknown.append(key)
    for kind, prefix in zip(kinds, prefixes, strict=True):
        converted, bad = _vit_to_ours(vits[prefix], _KIND_INDEX[kind])
        out.update({prefix + k: v for k, v in converted.items()})
        unknown += [prefix + k for k in bad]
    return out, unknown


def ours_to_openvla(state_dict: dict[str, torch.Tensor], kinds: tuple[str, ...] = ("dinov2", "siglip"),
                    ) -> dict[str, torch.Tensor]:
    """Our state dict -> the released layout (timm names), for export to the reference ecosystem."""
    out: dict[str, torch.Tensor] = {}
    inverse_top = {(w, ours): timm for timm, pair in _TOP.items() for w, ours in enumerate(pair) if ours}
    inverse_block = {(w, ours): timm for timm, pair in _BLOCK.items() for w, ours in enumerate(pair) if ours}
    for key, t in state_dict.items():
        if key in UNUSED_OURS:
            continue
        for kind, prefix in zip(kinds, (DINO, SIGLIP), strict=False):
            if key.startswith(prefix):
                _vit_key_to_timm(state_dict, prefix, key[len(prefix):], _KIND_INDEX[kind], inverse_top,
                                 inverse_block, out)
                break
        else:
            out[key] = t
    return out


def _vit_key_to_timm(sd, prefix, key, which, inverse_top, inverse_block, out) -> None:
    t = sd[prefix + key]
    m = re.fullmatch(r"encoder\.layers?\.(\d+)\.(.+)", key)
    attn = "attention" if which == 0 else "self_attn"
    if m:
        i, sub = m.groups()
        pre = _layer_prefix(which, i)
        if sub.startswith(f"{attn}.q_proj."):
            kind = sub.rsplit(".", 1)[1]
            parts = [sd[f"{prefix}{pre}{attn}.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
            out[f"{prefix}blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif sub.startswith((f"{attn}.k_proj.", f"{attn}.v_proj.")):
            return
        else:
            out[f"{prefix}blocks.{i}.{inverse_block[(which, sub)]}"] = t
    elif key == "embeddings.position_embeddings":
        out[prefix + "pos_embed"] = t[:, 1:]
    elif key == "embeddings.cls_token":
        out[prefix + "cls_token"] = t + sd[prefix + "embeddings.position_embeddings"][:, :1]
    elif key == "embeddings.position_embedding.weight":
        out[prefix + "pos_embed"] = t[None]
    elif key.startswith("head.attention.in_proj_"):
        kind = key.rsplit("_", 1)[1]
        d = t.shape[0] // 3
        out[f"{prefix}attn_pool.q.{kind}"] = t[:d]
        out[f"{prefix}attn_pool.kv.{kind}"] = t[d:]
    else:
        out[prefix + inverse_top[(which, key)]] = t
