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
from openvla.model.decoding import bidirectional_hidden, compiled, greedy_decode, supports_static_decoding
from openvla.model.diffusion import DDIMSchedule, timestep_embedding
from openvla.model.heads import (
    DiffusionActionHead,
    L1RegressionActionHead,
    NoisyActionProjector,
    ProprioProjector,
    VisionFiLM,
)
from openvla.model.processor import ImageLike, VLAProcessor
from openvla.model.projector import Projector
from openvla.model.vision import VisionBackbone

IGNORE_INDEX = -100


@dataclass
class VLAOutput:
    """What ``VLA.forward`` returns; accuracy and L1 (normalised space) are over action tokens only."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None  # None for the L1 head, which never needs vocabulary logits
    action_accuracy: torch.Tensor | None = None
    action_l1: torch.Tensor | None = None
    predicted_actions: torch.Tensor | None = None  # L1 head: normalised [B, chunk, D]


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
        self.proprio_projector = ProprioProjector(config.proprio_dim, config.llm_dim) if config.proprio_dim else None
        self.action_queries = self._make_action_queries(config)
        self.film = None
        if config.film:
            if not config.parallel_decoding:
                raise ValueError("film needs parallel_decoding (the instruction must be whole before decoding)")
            self.film = VisionFiLM(config.llm_dim, [(v.hidden_size, v.blocks_run) for v in config.vision])
        self.noisy_action_projector = None
        if config.action_head in ("l1", "diffusion") and not config.parallel_decoding:
            raise ValueError(f"action_head {config.action_head!r} needs parallel_decoding: the head reads all "
                             "slots at once")
        if config.action_head == "l1":
            self.action_head = L1RegressionActionHead(config.llm_dim, config.action_dim)
        elif config.action_head == "diffusion":
            if config.action_queries != "zeros":
                raise ValueError("the diffusion head puts the noisy actions in the slots; action_queries must be "
                                 "'zeros'")
            self.action_head = DiffusionActionHead(config.llm_dim, config.action_dim)
            self.noisy_action_projector = NoisyActionProjector(config.llm_dim)
            self.diffusion = DDIMSchedule(config.diffusion_steps)
        elif config.action_head == "tokens":
            self.action_head = None
        else:
            raise ValueError(f"unknown action_head {config.action_head!r}; valid: tokens, l1, diffusion")
        self.action_tokenizer = ActionTokenizer(config.action_vocab_size, config.n_action_bins)
        self.processor = VLAProcessor(config, tokenizer)
        self.compiled_inference = False

    @staticmethod
    def _make_action_queries(config: VLAConfig) -> nn.Parameter | None:
        """Learned slot inputs: a tiny LM sees zero slots as identical after its first layer, so they differ
        only by position; one embedding per slot tells them apart from the start (ACT's queries)."""
        if config.action_queries == "zeros":
            return None
        if config.action_queries != "learned":
            raise ValueError(f"unknown action_queries {config.action_queries!r}; valid: zeros, learned")
        if not config.parallel_decoding:
            raise ValueError("action_queries 'learned' needs parallel_decoding (the slots are its inputs)")
        return nn.Parameter(torch.randn(config.action_slots, config.llm_dim) * 0.02)

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

    def compile_inference(self) -> VLA:
        """Run the vision tower, projector, the prefill or parallel pass (dynamic shapes: the prompt's length
        varies) and each decode step (static shapes) through ``torch.compile``. The first calls compile (tens
        of seconds on a CPU)."""
        self.vision_backbone.compile(dynamic=False)
        self.projector.compile(dynamic=False)
        self.compiled_inference = True
        return self

    # --------------------------------------------------------------------------------------- forward
    def embed_images(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C * num_images, S, S] -> projected patch embeddings [B, num_images * N, llm_dim]; ``language``
        [B, llm_dim] conditions the ViTs of a FiLM model."""
        dtype = self.projector.fc1.weight.dtype
        b, c, s1, s2 = pixel_values.shape
        n_img = self.config.num_images
        per_image = self.vision_backbone.in_channels
        if c != per_image * n_img:
            raise ValueError(f"pixel_values must have {per_image * n_img} channels ({n_img} image(s) x "
                             f"{per_image}), got shape {tuple(pixel_values.shape)}")
        pixels = pixel_values.to(dtype).reshape(b * n_img, per_image, s1, s2)  # cameras share one pass
        film = None
        if self.film is not None:
            if language is None:
                raise ValueError("this FiLM model conditions its vision tower on the instruction; pass language")
            film = self.film(language.to(dtype).repeat_interleave(n_img, dim=0))
        patches = self.projector(self.vision_backbone(pixels, film))
        return patches.reshape(b, -1, patches.shape[-1])

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The language model's input embeddings of ``input_ids``: [B, L, H]."""
        return self.language_model.get_input_embeddings()(input_ids)

    def language_embedding(self, embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                           slots: torch.Tensor | None) -> torch.Tensor:
        """FiLM's condition: the mean of the prompt's token embeddings ``embeds`` [B, L, H] (not padding, not
        action slots)."""
        keep = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device) if slots is None else ~slots
        if attention_mask is not None:
            keep = keep & attention_mask.bool()
        weights = keep[..., None].to(embeds.dtype)
        return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1)

    def prefix_embeddings(self, pixel_values: torch.Tensor, proprio: torch.Tensor | None,
                          language: torch.Tensor | None = None) -> torch.Tensor:
        """Everything spliced after BOS: image patches, then (OFT) the proprio token."""
        prefix = self.embed_images(pixel_values, language)
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError(f"this model takes a {self.config.proprio_dim}-D proprio state; pass proprio")
            token = self.proprio_projector(proprio.to(prefix.dtype).reshape(prefix.shape[0], -1))
            prefix = torch.cat([prefix, token[:, None]], dim=1)
        return prefix

    @staticmethod
    def _with_timestep(prefix: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The diffusion head's timestep token [B] (its sinusoidal encoding) after the rest of the prefix."""
        token = timestep_embedding(timestep, prefix.shape[-1]).to(prefix.dtype)
        return torch.cat([prefix, token[:, None]], dim=1)

    def _splice(self, embeds: torch.Tensor, prefix: torch.Tensor, attention_mask: torch.Tensor | None,
                labels: torch.Tensor | None, slots: torch.Tensor | None = None,
                slot_inputs: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Insert the prefix right after BOS in the token embeddings [B, L, H], mask and labels; zero the action
        slots (OFT), or put ``slot_inputs`` [B, slots, H] (the diffusion head's noisy actions) or the learned
        queries there."""
        if slots is not None:
            embeds = embeds * ~slots[..., None]
            if slot_inputs is None and self.action_queries is not None:
                slot_inputs = self.action_queries.expand(embeds.shape[0], -1, -1)
            if slot_inputs is not None:
                embeds = embeds.masked_scatter(slots[..., None], slot_inputs.to(embeds.dtype))
        embeds = torch.cat([embeds[:, :1], prefix.to(embeds.dtype), embeds[:, 1:]], dim=1)
        b, n = prefix.shape[:2]
        if attention_mask is not None:
            ones = attention_mask.new_ones((b, n))
            attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if labels is not None:
            ignore = labels.new_full((b, n), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        return embeds, attention_mask, labels

    def _bidirectional_mask(self, mask: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor:
        """A 4-D additive mask letting every token see every non-padding token (OFT parallel decoding)."""
        b, length = embeds.shape[:2]
        keys = mask.bool() if mask is not None else torch.ones(b, length, dtype=torch.bool, device=embeds.device)
        blocked = torch.finfo(embeds.dtype).min
        full = torch.zeros(b, 1, length, length, dtype=embeds.dtype, device=embeds.device)
        return full.masked_fill(~keys[:, None, None, :], blocked)

    def _slot_hidden(self, hidden: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Hidden states that predict each action slot: the position before it (OFT's alignment)."""
        n = self.config.num_prefix_tokens
        before = torch.zeros_like(slots)
        before[:, :-1] = slots[:, 1:]
        full = torch.cat([before[:, :1], before.new_zeros((before.shape[0], n)), before[:, 1:]], dim=1)
        return hidden[full].reshape(hidden.shape[0], -1, hidden.shape[-1])

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                proprio: torch.Tensor | None = None, actions: torch.Tensor | None = None) -> VLAOutput:
        """Teacher-forced pass; with labels, the loss (LM cross-entropy, or L1 on ``actions`` for the L1 head)
        and action metrics (token accuracy, L1 in normalised space)."""
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"batch sizes differ: input_ids {input_ids.shape[0]}, "
                             f"pixel_values {pixel_values.shape[0]}")
        cfg = self.config
        slots = labels > self.action_tokenizer.begin_idx if (cfg.parallel_decoding and labels is not None) else None
        continuous = cfg.action_head in ("l1", "diffusion")
        if continuous and (labels is None or actions is None):
            raise ValueError(f"the {cfg.action_head} action head trains on labels (to find the action slots) and "
                             "continuous `actions` [B, chunk, D]")
        tokens = self.embed_tokens(input_ids)
        language = self.language_embedding(tokens, attention_mask, slots) if self.film is not None else None
        prefix = self.prefix_embeddings(pixel_values, proprio, language)
        slot_inputs = None
        if cfg.action_head == "diffusion":  # noise the actions at a random timestep per row; predict the noise
            clean = actions.to(prefix.device).float()
            timestep = torch.randint(0, cfg.diffusion_steps, (clean.shape[0],), device=prefix.device)
            noise = torch.randn_like(clean)
            slot_inputs = self.noisy_action_projector(self.diffusion.add_noise(clean, noise, timestep).to(prefix.dtype))
            prefix = self._with_timestep(prefix, timestep)
        embeds, mask, full_labels = self._splice(tokens, prefix, attention_mask, labels, slots, slot_inputs)
        if cfg.parallel_decoding:
            mask = self._bidirectional_mask(mask, embeds)
        if continuous:  # the LM's final hidden states feed the head; no vocabulary logits
            hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=mask,
                                               use_cache=False).last_hidden_state
            pred = self.action_head(self._slot_hidden(hidden, slots))
            if cfg.action_head == "diffusion":
                return VLAOutput(loss=(pred.float() - noise).pow(2).mean(), logits=None)
            loss = (pred.float() - actions.to(pred.device).float()).abs().mean()
            return VLAOutput(loss=loss, logits=None, action_l1=loss.detach(), predicted_actions=pred)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=full_labels, use_cache=False)
        acc = l1 = None
        if labels is not None:
            acc, l1 = self._action_metrics(out.logits, labels, prefix.shape[1])
        return VLAOutput(loss=out.loss, logits=out.logits, action_accuracy=acc, action_l1=l1)

    @torch.no_grad()
    def _action_metrics(self, logits: torch.Tensor, labels: torch.Tensor, num_prefix: int):
        """Token accuracy and L1 between decoded bins, over action-token labels only (EOS excluded)."""
        preds = logits[:, num_prefix:-1].argmax(-1)
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
        """The dataset whose statistics un-normalise actions: the one named, the model's default (the
        fine-tuning dataset), or the only one."""
        keys = sorted(self.norm_stats)
        if unnorm_key is None:
            default = getattr(self.config, "default_unnorm_key", None)
            if default in self.norm_stats:
                return default
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
                            attention_mask: torch.Tensor | None, num_tokens: int,
                            proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding of ``num_tokens`` ids: [B, num_tokens]. Llama-style decoders run with our static
        KV cache (``model/decoding.py``); others through transformers' ``generate``."""
        device = self.device
        prefix = self.prefix_embeddings(pixel_values.to(device), None if proprio is None else proprio.to(device))
        mask = attention_mask.to(device) if attention_mask is not None else None
        embeds, mask, _ = self._splice(self.embed_tokens(input_ids.to(device)), prefix, mask, None)
        lm = self.language_model
        if supports_static_decoding(lm):
            return greedy_decode(lm, embeds, mask, num_tokens, compile=self.compiled_inference)
        out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=num_tokens,
                          min_new_tokens=num_tokens, do_sample=False, pad_token_id=0)
        return out[:, -num_tokens:]

    @torch.inference_mode()
    def parallel_decode(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                        attention_mask: torch.Tensor | None, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """OFT: one bidirectional pass over zero-embedded action slots -> normalised actions [B, chunk, D]; the
        diffusion head makes ``diffusion_steps`` passes, denoising the actions in the slots."""
        cfg = self.config
        device = self.device
        b, n_slots = input_ids.shape[0], cfg.action_slots
        placeholder = input_ids.new_full((b, n_slots), self.action_tokenizer.begin_idx + 1)
        eos = input_ids.new_full((b, 1), int(cfg.llm.get("eos_token_id", 2)))
        ids = torch.cat([input_ids, placeholder, eos], dim=1).to(device)
        slots = torch.zeros_like(ids, dtype=torch.bool)
        slots[:, -1 - n_slots:-1] = True
        mask = None
        if attention_mask is not None:
            mask = torch.cat([attention_mask, attention_mask.new_ones((b, n_slots + 1))], dim=1).to(device)
        tokens = self.embed_tokens(ids)
        language = self.language_embedding(tokens, mask, slots) if self.film is not None else None
        prefix = self.prefix_embeddings(pixel_values.to(device), None if proprio is None else proprio.to(device),
                                        language)
        lm = self.language_model
        fast = supports_static_decoding(lm)
        run = compiled(bidirectional_hidden, True) if (fast and self.compiled_inference) else bidirectional_hidden

        def slot_states(prefix: torch.Tensor, slot_inputs: torch.Tensor | None = None) -> torch.Tensor:
            """Final hidden states at the positions that predict each slot (the one before it, OFT's alignment)."""
            embeds, full_mask, _ = self._splice(tokens, prefix, mask, None, slots, slot_inputs)
            if fast:
                hidden = run(lm, embeds, full_mask, keep_last=n_slots + 2)
            else:
                position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0) if full_mask is not None else None
                hidden = lm.model(inputs_embeds=embeds, attention_mask=self._bidirectional_mask(full_mask, embeds),
                                  position_ids=position_ids, use_cache=False).last_hidden_state
            return hidden[:, -2 - n_slots:-2]

        if cfg.action_head == "diffusion":  # DDIM from one fixed-seed noise: the same inputs, the same actions
            seed = torch.Generator(device=device).manual_seed(0)
            sample = torch.randn(cfg.action_chunk, cfg.action_dim, generator=seed, device=device).expand(b, -1, -1)
            steps = cfg.diffusion_steps
            for t in self.diffusion.timesteps(steps):
                timestep = torch.full((b,), t, device=device)
                hidden = slot_states(self._with_timestep(prefix, timestep),
                                     self.noisy_action_projector(sample.to(prefix.dtype)))
                sample = self.diffusion.step(self.action_head(hidden).float(), t, steps, sample)
            return sample.clamp(-1, 1).cpu()
        hidden = slot_states(prefix)
        if cfg.action_head == "l1":
            return self.action_head(hidden).float().clamp(-1, 1).cpu()
        logits = lm.lm_head(hidden)
        normalized = self.action_tokenizer.decode(logits.argmax(-1))
        return torch.from_numpy(normalized).reshape(b, cfg.action_chunk, cfg.action_dim)

    def normalize_proprio(self, proprio: np.ndarray | torch.Tensor, unnorm_key: str | None) -> torch.Tensor:
        """Raw proprio [B, P] -> [-1, 1] with the dataset's q01/q99 (clipped), as OFT does."""
        arr = np.asarray(proprio, dtype=np.float64).reshape(-1, self.config.proprio_dim)
        stats = self.norm_stats.get(unnorm_key, {}).get("proprio") if unnorm_key else None
        if stats is not None:
            low, high = np.asarray(stats["q01"]), np.asarray(stats["q99"])
            arr = np.clip(2 * (arr - low) / (high - low + 1e-8) - 1, -1, 1)
        return torch.from_numpy(arr.astype(np.float32))

    def predict_action(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, unnorm_key: str | None = None,
                       image: ImageLike | list[ImageLike] | None = None,
                       instruction: str | list[str] | None = None,
                       wrist_image: ImageLike | list[ImageLike] | None = None,
                       proprio: np.ndarray | torch.Tensor | None = None, **_: Any) -> np.ndarray:
        """Actions in robot units: [D] for one input, [B, D] for a batch; with action chunks, [chunk, D] and
        [B, chunk, D].

        Give either ``image`` + ``instruction`` (the processor runs) or ``pixel_values`` + ``input_ids``.
        ``wrist_image`` and ``proprio`` (raw units) are for models configured to take them.
        """
        cfg = self.config
        key = self.resolve_unnorm_key(unnorm_key)
        if image is not None:
            if instruction is None:
                raise ValueError("predict_action(image=...) needs an instruction")
            single = not isinstance(image, list | tuple)
            images = [image] if single else list(image)
            batch = self.processor(instruction, images)
            prompts, pixel_values = batch["input_ids"], batch["pixel_values"]
            if cfg.num_images > 1:
                if wrist_image is None:
                    raise ValueError(f"this model takes {cfg.num_images} cameras; pass wrist_image")
                wrists = [wrist_image] if single else list(wrist_image)
                extra = torch.stack([self.processor.preprocess_image(w) for w in wrists])
                pixel_values = torch.cat([pixel_values, extra], dim=1)
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
        state = self.normalize_proprio(proprio, key) if (cfg.proprio_dim and proprio is not None) else None
        ids, mask = self.pack_prompts(prompts)
        if cfg.parallel_decoding:
            normalized = self.parallel_decode(ids, pixel_values, mask, state).numpy().astype(np.float64)
        else:
            dim = self.action_dim_for(key)
            token_ids = self.generate_action_ids(ids, pixel_values, mask, dim * cfg.action_chunk, state)
            normalized = self.action_tokenizer.decode(token_ids)
            if cfg.action_chunk > 1:
                normalized = normalized.reshape(len(prompts), cfg.action_chunk, dim)
        actions = normalized if key is None else unnormalize_actions(
            normalized, self.norm_stats[key]["action"], cfg.action_normalization)
        return actions[0] if single else actions
