"""The VLA: vision tower -> projector -> causal LM that emits discretised action tokens (OpenVLA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from openvla.config import VLAConfig
from openvla.model.action_tokenizer import ActionTokenizer
from openvla.model.processor import ImageLike, VLAProcessor
from openvla.model.projector import Projector
from openvla.model.vision import VisionBackbone

IGNORE_INDEX = -100


@dataclass
class VLAOutput:
    """What ``VLA.forward`` returns; accuracy and L1 (normalised space) are over action tokens only."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    action_accuracy: torch.Tensor | None = None
    action_l1: torch.Tensor | None = None


def build_llm(llm: dict[str, Any]) -> nn.Module:
    """Any transformers causal LM from its config dict (Llama, Qwen2, ...), randomly initialised."""
    cfg = dict(llm)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    return AutoModelForCausalLM.from_config(hf_config)


def unnormalize_actions(actions: np.ndarray, stats: dict[str, Any], mode: str = "bounds_q99") -> np.ndarray:
    """Normalised [-1, 1] actions -> robot units; dims with mask False pass through (the gripper)."""
    mask = np.asarray(stats.get("mask", np.ones(actions.shape[-1], dtype=bool)), dtype=bool)
    if mode == "bounds_q99":
        low, high = np.asarray(stats["q01"]), np.asarray(stats["q99"])
        raw = 0.5 * (actions + 1.0) * (high - low) + low
    elif mode == "bounds":
        low, high = np.asarray(stats["min"]), np.asarray(stats["max"])
        raw = 0.5 * (actions + 1.0) * (high - low) + low
    elif mode == "normal":
        raw = actions * np.asarray(stats["std"]) + np.asarray(stats["mean"])
    else:
        raise ValueError(f"unknown action normalisation {mode!r}; valid: bounds_q99, bounds, normal")
    return np.where(mask, raw, actions)


class VLA(nn.Module):
    """OpenVLA-compatible model. Child names match the released checkpoint: vision_backbone, projector,
    language_model."""

    def __init__(self, config: VLAConfig, tokenizer: Any | None = None) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config.vision)
        self.projector = Projector(config.projector, config.vision_dim, config.llm_dim)
        self.language_model = build_llm(config.llm)
        self.action_tokenizer = ActionTokenizer(config.action_vocab_size, config.n_action_bins)
        self.processor = VLAProcessor(config, tokenizer)

    # ----------------------------------------------------------------------------------------- files
    @classmethod
    def create(cls, config: VLAConfig, instructions: list[str] | tuple[str, ...] = (), seed: int = 0) -> VLA:
        """A randomly initialised model with a tokenizer trained on ``instructions`` (training from scratch)."""
        from openvla.model.text_tokenizer import train_tokenizer

        tokenizer = train_tokenizer(instructions, config.action_vocab_size, config.n_action_bins)
        torch.manual_seed(seed)
        return cls(config, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> VLA:
        """Load our checkpoint or a released OpenVLA (Hugging Face layout) directory, or a Hub repo id."""
        from openvla.checkpoint import load_vla

        return load_vla(path, **kwargs)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config, safetensors weights, norm stats and tokenizer to ``path``."""
        from openvla.checkpoint.native import save_vla

        return save_vla(self, path)

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats

    @property
    def tokenizer(self) -> Any | None:
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return self.projector.fc1.weight.device

    # --------------------------------------------------------------------------------------- forward
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> projected patch embeddings [B, N, llm_dim]."""
        dtype = self.projector.fc1.weight.dtype
        return self.projector(self.vision_backbone(pixel_values.to(dtype)))

    def _splice(self, input_ids: torch.Tensor, patches: torch.Tensor, attention_mask: torch.Tensor | None,
                labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Insert the image patches right after BOS in embeddings, mask and labels."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        embeds = torch.cat([embeds[:, :1], patches.to(embeds.dtype), embeds[:, 1:]], dim=1)
        b, n = patches.shape[:2]
        if attention_mask is not None:
            ones = attention_mask.new_ones((b, n))
            attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if labels is not None:
            ignore = labels.new_full((b, n), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        return embeds, attention_mask, labels

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> VLAOutput:
        """Teacher-forced pass; with labels, returns the causal-LM loss and action-token metrics."""
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"batch sizes differ: input_ids {input_ids.shape[0]}, "
                             f"pixel_values {pixel_values.shape[0]}")
        patches = self.embed_images(pixel_values)
        embeds, mask, full_labels = self._splice(input_ids, patches, attention_mask, labels)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=full_labels, use_cache=False)
        acc = l1 = None
        if labels is not None:
            acc, l1 = self._action_metrics(out.logits, labels, patches.shape[1])
        return VLAOutput(loss=out.loss, logits=out.logits, action_accuracy=acc, action_l1=l1)

    @torch.no_grad()
    def _action_metrics(self, logits: torch.Tensor, labels: torch.Tensor, num_patches: int):
        preds = logits[:, num_patches:-1].argmax(-1)
        gt = labels[:, 1:]
        mask = gt > self.action_tokenizer.begin_idx
        if not mask.any():
            return None, None
        acc = (preds[mask] == gt[mask]).float().mean()
        tok = self.action_tokenizer
        l1 = (tok.decode_torch(preds[mask]) - tok.decode_torch(gt[mask])).abs().mean().float()
        return acc, l1

    # ------------------------------------------------------------------------------------- inference
    def resolve_unnorm_key(self, unnorm_key: str | None) -> str | None:
        """The dataset whose statistics un-normalise actions: the only one, or the one named."""
        keys = sorted(self.norm_stats)
        if unnorm_key is None:
            if len(keys) > 1:
                raise ValueError(f"this model has statistics for several datasets; pass unnorm_key, one of {keys}")
            return keys[0] if keys else None
        if unnorm_key not in self.norm_stats:
            raise ValueError(f"unknown unnorm_key {unnorm_key!r}; valid keys: {keys}")
        return unnorm_key

    def action_dim_for(self, unnorm_key: str | None) -> int:
        if unnorm_key is None:
            return self.config.action_dim
        return len(self.norm_stats[unnorm_key]["action"]["q01"])

    def pack_prompts(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Ids per row -> [B, L] with padding placed right after BOS (so the image always splices at 1).

        Each row ends with the empty token; positions come from the mask, so padding is invisible.
        """
        empty = self.config.empty_token_id
        rows = [list(p) if p[-1] == empty else [*p, empty] for p in prompts]
        length = max(len(r) for r in rows)
        if all(len(r) == length for r in rows):
            return torch.tensor(rows, dtype=torch.long), None
        pad = int(self.config.llm.get("pad_token_id") or 0)
        ids = torch.tensor([[r[0]] + [pad] * (length - len(r)) + r[1:] for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] + [0] * (length - len(r)) + [1] * (len(r) - 1) for r in rows], dtype=torch.long)
        return ids, mask

    @torch.inference_mode()
    def generate_action_ids(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                            attention_mask: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
        """Greedy decoding of ``num_tokens`` ids with a KV cache: [B, num_tokens]."""
        device = self.device
        input_ids = input_ids.to(device)
        patches = self.embed_images(pixel_values.to(device))
        mask = attention_mask.to(device) if attention_mask is not None else None
        embeds, mask, _ = self._splice(input_ids, patches, mask, None)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0) if mask is not None else None
        lm = self.language_model
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=True,
                 logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        tokens = [token]
        for _ in range(num_tokens - 1):
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                position_ids = position_ids[:, -1:] + 1
            out = lm(input_ids=token[:, None], attention_mask=mask, position_ids=position_ids,
                     past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1].argmax(-1)
            tokens.append(token)
        return torch.stack(tokens, dim=1)

    def predict_action(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, unnorm_key: str | None = None,
                       image: ImageLike | list[ImageLike] | None = None,
                       instruction: str | list[str] | None = None, **_: Any) -> np.ndarray:
        """Actions in robot units: [D] for one input, [B, D] for a batch.

        Give either ``image`` + ``instruction`` (the processor runs) or ``pixel_values`` + ``input_ids``.
        """
        key = self.resolve_unnorm_key(unnorm_key)
        if image is not None:
            if instruction is None:
                raise ValueError("predict_action(image=...) needs an instruction")
            single = not isinstance(image, list | tuple)
            batch = self.processor(instruction, list(image) if not single else [image])
            prompts, pixel_values = batch["input_ids"], batch["pixel_values"]
        else:
            if pixel_values is None or input_ids is None:
                raise ValueError("predict_action needs image + instruction, or pixel_values + input_ids")
            if pixel_values.ndim == 3:
                pixel_values = pixel_values[None]
            if input_ids.ndim == 1:
                input_ids = input_ids[None]
            single = input_ids.shape[0] == 1
            prompts = [row[m.bool()].tolist() if attention_mask is not None else row.tolist()
                       for row, m in zip(input_ids, attention_mask if attention_mask is not None else input_ids,
                                         strict=True)]
        if len(prompts) != pixel_values.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images for {len(prompts)} prompts")
        ids, mask = self.pack_prompts(prompts)
        dim = self.action_dim_for(key)
        token_ids = self.generate_action_ids(ids, pixel_values, mask, dim)
        normalized = self.action_tokenizer.decode(token_ids)
        actions = normalized if key is None else unnormalize_actions(
            normalized, self.norm_stats[key]["action"], self.config.action_normalization)
        return actions[0] if single else actions
