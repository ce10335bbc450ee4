"""Dataclass configs for the VLA and its named presets. A preset is data, not code."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
LEGACY_CAMERAS = ["image", "wrist_image"]  # the observation keys of cameras before they were named


@dataclass
class VisionBackboneConfig:
    """One ViT of the vision tower; ``kind`` picks the transformers class (DINOv2-with-registers or SigLIP)."""

    kind: str  # "dinov2" | "siglip"
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 14
    image_size: int = 224
    num_registers: int = 0  # DINOv2 register tokens (OpenVLA: 4)
    use_head: bool = False  # SigLIP MAP head: unused by the VLA, kept so released checkpoints load strictly
    feature_layer: int = -2  # features are the output of this block (negative: from the end), no final norm
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_registers if self.kind == "dinov2" else 0

    @property
    def blocks_run(self) -> int:
        """Blocks up to and including the feature block; later ones are never run."""
        return self.feature_layer % self.depth + 1


@dataclass
class VLAConfig:
    """Everything needed to build a VLA: vision tower, projector, language model, action coding."""

    name: str
    vision: list[VisionBackboneConfig]
    llm: dict[str, Any]  # a transformers config dict with "model_type" (llama, qwen2, ...)
    projector: str = "fused-gelu-mlp"  # or "gelu-mlp"
    image_resize_strategy: str = "resize-naive"  # or "letterbox", "resize-crop"
    action_dim: int = 7  # used when no normalisation statistics say otherwise
    n_action_bins: int = 256
    pad_to_multiple_of: int = 64  # actions occupy the last n_action_bins ids below vocab - this
    empty_token_id: int = 29871  # the lone "▁" the prompt must end with before action tokens
    prompt: str = "In: What action should the robot take to {instruction}?\nOut:"
    center_crop: bool = False  # trained with random-crop augmentation: inference takes the centre crop
    # The frame pipeline shared by training and inference (model/processor.py), before the strategy above:
    frame_resize: str | None = None  # "lanczos": raw frames -> image_size first (our training data); None: released
    jpeg_quality: int | None = None  # JPEG round trip of raw frames at this quality (None: off)
    action_normalization: str = "bounds_q99"  # or "bounds" (min/max), "normal" (mean/std)
    # OpenVLA-OFT as configuration (all off = OpenVLA): chunks, parallel decoding, L1 head, proprio, cameras
    action_chunk: int = 1  # future actions predicted per call
    parallel_decoding: bool = False  # one bidirectional pass over zero-embedded action slots
    action_queries: str = "zeros"  # slot inputs: "zeros" (OFT) or "learned" (one embedding per slot, as ACT)
    action_head: str = "tokens"  # "tokens" (discrete bins, LM head), "l1" (MLP-ResNet regression), "diffusion"
    diffusion_steps: int = 50  # diffusion head: DDIM training timesteps, and denoising passes at inference
    flow_steps: int = 10  # flow head: Euler integration steps at inference
    fast_tokenizer: dict[str, Any] | None = None  # fast head: its DCT + BPE codec (None: DCT only, no merges)
    proprio_dim: int = 0  # >0 adds a proprio projector token after the image patches
    film: bool = False  # OFT+: every ViT block run is modulated by the instruction (x * (1 + gamma) + beta)
    cameras: list[str] = field(default_factory=lambda: ["image"])  # by name, primary first; stacked on channels
    norm_stats: dict[str, Any] = field(default_factory=dict)
    default_unnorm_key: str | None = None  # the statistics used when none are named (the fine-tuning dataset)

    @property
    def image_size(self) -> int:
        return self.vision[0].image_size

    @property
    def num_patches(self) -> int:
        return self.vision[0].num_patches

    @property
    def vision_dim(self) -> int:
        return sum(v.hidden_size for v in self.vision)

    @property
    def num_images(self) -> int:
        return len(self.cameras)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens spliced after BOS: image patches of every camera, the proprio token, the head's own tokens
        (the diffusion head's timestep)."""
        from openvla.model.heads import head_class

        return (self.num_patches * self.num_images + (1 if self.proprio_dim else 0)
                + head_class(self.action_head).extra_prefix_tokens)

    @property
    def action_slots(self) -> int:
        return self.action_chunk * self.action_dim

    @property
    def llm_dim(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def action_vocab_size(self) -> int:
        """The tokenizer's vocabulary size without padding (32000 for OpenVLA): actions end just below it."""
        return int(self.llm["vocab_size"]) - self.pad_to_multiple_of

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VLAConfig:
        data = copy.deepcopy(data)
        if "num_images" in data:  # older configs counted cameras: the primary, then wrist cameras
            n = int(data.pop("num_images"))
            data.setdefault("cameras", LEGACY_CAMERAS[:n] + [f"image_{i}" for i in range(len(LEGACY_CAMERAS), n)])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VLA config keys {unknown}; valid keys are {sorted(known)}")
        vision = []
        for v in data.pop("vision"):
            v = dict(v)
            v["mean"], v["std"] = tuple(v.get("mean", IMAGENET_MEAN)), tuple(v.get("std", IMAGENET_STD))
            vision.append(VisionBackboneConfig(**v))
        return cls(vision=vision, **data)


def llama_config(hidden: int, layers: int, heads: int, intermediate: int, vocab: int, **extra: Any) -> dict:
    """A Llama config dict with the defaults OpenVLA's checkpoints were saved under (transformers 4.40)."""
    cfg = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": vocab - 64,
        "tie_word_embeddings": False,
    }
    cfg.update(extra)
    return cfg


def dinosiglip(dino: tuple[int, int, int, int], siglip: tuple[int, int, int, int], image_size: int = 224,
               patch_size: int = 14, siglip_head: bool = True) -> list[VisionBackboneConfig]:
    """The fused OpenVLA tower; each tuple is (width, depth, heads, mlp width)."""
    return [
        VisionBackboneConfig("dinov2", *dino, patch_size=patch_size, image_size=image_size, num_registers=4,
                             mean=IMAGENET_MEAN, std=IMAGENET_STD),
        VisionBackboneConfig("siglip", *siglip, patch_size=patch_size, image_size=image_size,
                             use_head=siglip_head, mean=INCEPTION_MEAN, std=INCEPTION_STD),
    ]


PRESETS: dict[str, VLAConfig] = {
    # The released architecture, exactly (SPEC section 1).
    "openvla-7b": VLAConfig(
        name="openvla-7b",
        vision=dinosiglip((1024, 24, 16, 4096), (1152, 27, 16, 4304)),
        llm=llama_config(4096, 32, 32, 11008, 32064),
    ),
    # Trains from scratch on a CPU in minutes: a small fused tower on 96px images (8x8 patches of 12px,
    # features from the last block), a 2-layer Llama 128 wide and its own tokenizer.
    "small": VLAConfig(
        name="small",
        vision=[VisionBackboneConfig("dinov2", 96, 3, 4, 384, patch_size=12, image_size=96, num_registers=4,
                                     feature_layer=-1),
                VisionBackboneConfig("siglip", 96, 3, 4, 384, patch_size=12, image_size=96, feature_layer=-1,
                                     mean=INCEPTION_MEAN, std=INCEPTION_STD)],
        llm=llama_config(128, 2, 4, 384, 1024 + 64),
        empty_token_id=3,
    ),
    # For tests: the fixture's sizes on a tiny vocabulary.
    "tiny": VLAConfig(
        name="tiny",
        vision=dinosiglip((64, 4, 4, 256), (48, 4, 4, 179), siglip_head=False),
        llm=llama_config(64, 2, 4, 176, 768 + 64),
        empty_token_id=3,
    ),
}


def get_preset(name: str) -> VLAConfig:
    """A fresh copy of a named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
