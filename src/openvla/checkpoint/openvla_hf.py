"""Read and write the released OpenVLA Hugging Face layout (config.json + timm-named safetensors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from openvla.checkpoint.common import (
    STATS_FILE,
    CheckpointError,
    instantiate,
    load_tokenizer,
    read_json,
    read_norm_stats,
    read_safetensors,
)
from openvla.checkpoint.convert import DINO, SIGLIP, openvla_to_ours, ours_to_openvla
from openvla.checkpoint.reference_files import (
    PREPROCESSOR_FILE,
    copy_remote_code,
    make_tokenizer_portable,
    preprocessor_config_for,
    warn_if_predict_action_fails,
)
from openvla.config import INCEPTION_MEAN, INCEPTION_STD, VisionBackboneConfig, VLAConfig, llama_config

# vision_backbone_id -> timm ids and default sizes (width, depth, heads) of each backbone
_DINO_L = ("vit_large_patch14_reg4_dinov2.lvd142m", "dinov2", (1024, 24, 16))
_SIGLIP_SO = ("vit_so400m_patch14_siglip_224", "siglip", (1152, 27, 16))
BACKBONES = {
    "dinosiglip-vit-so-224px": [_DINO_L, _SIGLIP_SO],
    "siglip-vit-so400m": [_SIGLIP_SO],
    "dinov2-vit-l": [_DINO_L],
}
TOOLKIT_KEY = "openvla_toolkit"
# transformers 4.40.1 LlamaConfig defaults: what the released config.json leaves implicit (SPEC 1.1)
_LLAMA_440_DEFAULTS = llama_config(4096, 32, 32, 11008, 32000)


def is_openvla_dir(directory: Path) -> bool:
    cfg = directory / "config.json"
    return cfg.exists() and read_json(cfg).get("model_type") in ("openvla", "prismatic")


def config_from_hf(hf: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> VLAConfig:
    """Our VLAConfig from a released config.json; MLP widths and the SigLIP head come from the weights."""
    backbone_id = hf.get("vision_backbone_id", "siglip-vit-so400m")
    if backbone_id not in BACKBONES:
        raise CheckpointError(f"vision_backbone_id {backbone_id!r} is not supported; supported: {sorted(BACKBONES)}")
    _check_backbone_id(hf.get("vision_backbone_id"), state_dict)
    overrides = hf.get("timm_model_kwargs") or [{}] * len(BACKBONES[backbone_id])
    size = int((hf.get("image_sizes") or [224])[0])
    vision = []
    for (_, kind, (width, depth, heads)), kw, prefix in zip(BACKBONES[backbone_id], overrides, (DINO, SIGLIP),
                                                            strict=False):  # featurizer, then fused
        fc1 = state_dict.get(f"{prefix}blocks.0.mlp.fc1.weight")
        if fc1 is None:
            raise CheckpointError(f"weights have no {prefix}blocks.0.mlp.fc1.weight")
        common = dict(hidden_size=kw.get("embed_dim", width), depth=kw.get("depth", depth),
                      num_heads=kw.get("num_heads", heads), mlp_dim=int(fc1.shape[0]), image_size=size)
        if kind == "dinov2":
            vision.append(VisionBackboneConfig("dinov2", num_registers=4, **common))
        else:
            vision.append(VisionBackboneConfig("siglip", use_head=f"{prefix}attn_pool.latent" in state_dict,
                                               mean=INCEPTION_MEAN, std=INCEPTION_STD, **common))
    text = dict(hf.get("text_config") or {})
    if text.get("model_type", "llama") != "llama":
        raise CheckpointError(f"text_config.model_type {text.get('model_type')!r}: only llama is in this layout")
    llm = dict(_LLAMA_440_DEFAULTS)
    llm.update({k: v for k, v in text.items() if k not in ("torch_dtype", "dtype", "architectures",
                                                               "_name_or_path", "transformers_version")})
    llm.setdefault("num_key_value_heads", llm["num_attention_heads"])
    arch = hf.get("arch_specifier", "no-align+gelu-mlp")
    projector = "fused-gelu-mlp" if arch.endswith("fused-gelu-mlp") else "gelu-mlp"
    norm_stats = hf.get("norm_stats") or {}
    first = next(iter(norm_stats.values()), None)
    ours = hf.get(TOOLKIT_KEY, {})  # fields the reference has no place for, written by our export
    return VLAConfig(
        **ours,
        name=hf.get("_name_or_path") or "openvla",
        vision=vision,
        llm=llm,
        projector=projector,
        image_resize_strategy=hf.get("image_resize_strategy", "letterbox"),
        action_dim=len(first["action"]["q01"]) if first else 7,
        n_action_bins=int(hf.get("n_action_bins", 256)),
        pad_to_multiple_of=int(hf.get("pad_to_multiple_of", 64)),
        norm_stats=norm_stats,
    )


_KIND_NAMES = {"dinov2": "DINOv2", "siglip": "SigLIP"}


def _check_backbone_id(given: str | None, state_dict: dict[str, torch.Tensor]) -> None:
    """config.json's vision_backbone_id must name the ViTs the weights hold (else every ViT key is 'unexpected')."""
    if not any(k.startswith(DINO) for k in state_dict):
        return  # no vision weights to judge by (an error about them follows)
    fused = any(k.startswith(SIGLIP) for k in state_dict)
    first = "dinov2" if f"{DINO}reg_token" in state_dict else "siglip"
    implied = ("dinov2", "siglip") if fused else (first,)
    wanted = next(b for b, towers in BACKBONES.items() if tuple(t[1] for t in towers) == implied)
    given_kinds = tuple(t[1] for t in BACKBONES[given or "siglip-vit-so400m"])  # the reference's default
    if given_kinds == implied:
        return
    holds = " + ".join(f"{_KIND_NAMES[k]} ({p.split('.')[1]})" for k, p in zip(implied, (DINO, SIGLIP),
                                                                                 strict=False))
    said = (f"vision_backbone_id {given!r} means {' + '.join(_KIND_NAMES[k] for k in given_kinds)}"
            if given is not None else "config.json has no vision_backbone_id (the reference then assumes "
                                      "'siglip-vit-so400m', one SigLIP)")
    raise CheckpointError(f"{said}, but the weights hold {holds}: set \"vision_backbone_id\": \"{wanted}\" in "
                          "config.json")


def load_openvla_hf(directory: Path, dtype: torch.dtype | None = None):
    """Load a released OpenVLA checkpoint directory into our VLA, exactly."""
    hf = read_json(directory / "config.json")
    raw = read_safetensors(directory)
    try:
        config = config_from_hf(hf, raw)
    except CheckpointError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {err}") from err
    config.norm_stats = read_norm_stats(directory, config.norm_stats)
    state, unknown = openvla_to_ours(raw, tuple(v.kind for v in config.vision))
    if unknown:
        raise CheckpointError(f"{directory}: unexpected keys in the weights ({len(unknown)}): {unknown[:20]}")
    return instantiate(config, state, load_tokenizer(directory), dtype=dtype, source=str(directory))


OFT_FIELDS = ("action_chunk", "parallel_decoding", "action_queries", "action_head", "proprio_dim", "num_images",
              "film")


def hf_config_for(config: VLAConfig) -> dict[str, Any]:
    """A released-style config.json for our config (full text_config; timm_model_kwargs for custom sizes)."""
    kinds = [v.kind for v in config.vision]
    ids = {("dinov2", "siglip"): "dinosiglip-vit-so-224px", ("siglip",): "siglip-vit-so400m",
           ("dinov2",): "dinov2-vit-l"}
    if tuple(kinds) not in ids or config.llm.get("model_type") != "llama":
        raise ValueError(f"the OpenVLA layout holds DINOv2/SigLIP towers and a Llama LM; this model has "
                         f"{kinds} and {config.llm.get('model_type')}")
    if any(v.patch_size != 14 for v in config.vision):
        raise ValueError("the OpenVLA layout assumes patch size 14")
    default = VLAConfig(name="", vision=[], llm={})
    oft = [k for k in OFT_FIELDS if getattr(config, k) != getattr(default, k)]
    if oft:
        raise ValueError(f"the OpenVLA layout holds single-step token models; this one sets {oft} "
                         "(OFT): save it with save_pretrained")
    backbone_id = ids[tuple(kinds)]
    timm = BACKBONES[backbone_id]
    kwargs = [{"embed_dim": v.hidden_size, "depth": v.depth, "num_heads": v.num_heads} for v in config.vision]
    defaults = [{"embed_dim": w, "depth": d, "num_heads": h} for _, _, (w, d, h) in timm]
    text = {k: v for k, v in config.llm.items()}
    out = {
        "arch_specifier": f"no-align+{config.projector}",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": config.image_resize_strategy,
        "image_sizes": [v.image_size for v in config.vision],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048,
        "model_type": "openvla",
        "n_action_bins": config.n_action_bins,
        "norm_stats": config.norm_stats,
        "output_projector_states": False,
        "pad_to_multiple_of": config.pad_to_multiple_of,
        "pad_token_id": text.get("pad_token_id"),
        "text_config": text,
        "timm_model_ids": [t[0] for t in timm],
        "timm_override_act_layers": [None] * len(timm),
        "torch_dtype": "float32",
        "use_fused_vision_backbone": len(kinds) == 2,
        "vision_backbone_id": backbone_id,
    }
    if kwargs != defaults:
        out["timm_model_kwargs"] = kwargs
    out[TOOLKIT_KEY] = {"empty_token_id": config.empty_token_id, "center_crop": config.center_crop,
                        "action_normalization": config.action_normalization, "frame_resize": config.frame_resize,
                        "jpeg_quality": config.jpeg_quality, "cameras": config.cameras}
    if config.default_unnorm_key is not None:
        out[TOOLKIT_KEY]["default_unnorm_key"] = config.default_unnorm_key
    return out


def export_openvla(model, directory: str | Path, remote_code_from: str | Path | None = None) -> Path:
    """Write ``model`` in the released layout so the reference ecosystem (and we) can load it: weights,
    config.json with the weights' dtype, statistics, preprocessor_config.json, a tokenizer that transformers
    4.40 reads, and the remote-code files of ``remote_code_from`` (default: the checkpoint the model was
    loaded from; a one-line warning says how to add them when there are none)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: VLAConfig = model.config
    hf = hf_config_for(config)
    kinds = tuple(v.kind for v in config.vision)
    state = {k: v.detach().contiguous() for k, v in ours_to_openvla(model.state_dict(), kinds).items()}
    siglip = next((v for v in config.vision if v.kind == "siglip"), None)
    prefix = SIGLIP if len(config.vision) == 2 else DINO
    if siglip is not None and not siglip.use_head:
        state.update(_empty_attn_pool(prefix, siglip, next(iter(state.values())).dtype))
    if config.llm.get("tie_word_embeddings"):
        state["language_model.lm_head.weight"] = state["language_model.model.embed_tokens.weight"].clone()
    hf["torch_dtype"] = str(model.language_model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf, indent=2))
    (directory / STATS_FILE).write_text(json.dumps(config.norm_stats, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": hf["pad_token_id"]}, indent=2))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config_for(config), indent=2))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))
        make_tokenizer_portable(directory)
    copy_remote_code(remote_code_from or getattr(model, "source_dir", None), directory)
    warn_if_predict_action_fails(config, directory)
    return directory


def _empty_attn_pool(prefix: str, cfg: VisionBackboneConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Zero weights for the SigLIP MAP head the reference's timm model always has (the VLA never uses it)."""
    d, m = cfg.hidden_size, cfg.mlp_dim
    shapes = {"latent": (1, 1, d), "q.weight": (d, d), "q.bias": (d,), "kv.weight": (2 * d, d), "kv.bias": (2 * d,),
              "proj.weight": (d, d), "proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,),
              "mlp.fc1.weight": (m, d), "mlp.fc1.bias": (m,), "mlp.fc2.weight": (d, m), "mlp.fc2.bias": (d,)}
    return {f"{prefix}attn_pool.{k}": torch.zeros(s, dtype=dtype) for k, s in shapes.items()}
