"""The VLA: vision tower -> projector -> causal LM that emits discretised action tokens (OpenVLA)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from openvla.config import VLAConfig
from openvla.model.action_tokenizer import ActionTokenizer
from openvla.model.decoding import bidirectional_hidden, compiled, greedy_decode, supports_static_decoding
from openvla.model.heads import head_class
from openvla.model.llm_spec import LLMSpec
from openvla.model.modules import ProprioProjector, VisionFiLM
from openvla.model.processor import ImageLike, VLAProcessor
from openvla.model.projector import Projector
from openvla.model.vision import VisionBackbone

IGNORE_INDEX = -100


@dataclass
class ModelInputs:
    """A batch as the model takes it: prompt (+ action) ids, pixels of every camera, and for training the
    labels, normalised actions [B, chunk, D] and which chunk steps lie inside their episode."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    proprio: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    action_mask: torch.Tensor | None = None


@dataclass
class VLAOutput:
    """What ``VLA.forward`` returns: the loss, the head's metrics (normalised space), and the logits or actions
    the head computed on the way."""

    loss: torch.Tensor | None
    logits: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    predicted_actions: torch.Tensor | None = None  # continuous heads: normalised [B, chunk, D]

    @property
    def action_accuracy(self) -> torch.Tensor | None:
        return self.metrics.get("action_accuracy")

    @property
    def action_l1(self) -> torch.Tensor | None:
        return self.metrics.get("action_l1")


def build_llm(llm: dict[str, Any]) -> nn.Module:
    """Any transformers causal LM from its config dict (Llama, Qwen2, ...), randomly initialised."""
    cfg = dict(llm)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    return AutoModelForCausalLM.from_config(hf_config)


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
        self.action_head = head_class(config.action_head)(config)
        self.llm = LLMSpec.from_config(config)
        if tokenizer is not None:
            self.llm.check_tokenizer(tokenizer)
        self.action_tokenizer = ActionTokenizer(config.action_vocab_size, config.n_action_bins)
        self.processor = VLAProcessor(config, tokenizer)
        self.compiled_inference = False

    def new_modules(self) -> list[str]:
        """Modules a pretrained VLM checkpoint lacks (OFT's proprio projector, slot queries, FiLM, the head's
        own): they train in full in every fine-tuning mode and are never LoRA-wrapped."""
        own = [n for n in ("proprio_projector", "action_queries", "film") if getattr(self, n) is not None]
        return own + self.action_head.new_modules()

    def unused_prefixes(self) -> list[str]:
        """Parameter-name prefixes the loss never reaches: ViT blocks after the feature block, final ViT norms,
        the SigLIP head, DINOv2's mask token, and whatever the head does not use (e.g. the LM head)."""
        prefixes = ["vision_backbone.featurizer.embeddings.mask_token", *self.action_head.unused_prefixes()]
        vb = self.vision_backbone
        for attr, cfg in (("featurizer", vb.configs[0]), ("fused_featurizer", vb.configs[-1])):
            vit = getattr(vb, attr)
            if vit is None:
                continue
            layers = "encoder.layer" if hasattr(vit.encoder, "layer") else "encoder.layers"
            prefixes += [f"vision_backbone.{attr}.{layers}.{i}." for i in range(cfg.blocks_run, cfg.depth)]
            prefixes += [f"vision_backbone.{attr}.{n}" for n in ("layernorm.", "post_layernorm.", "head.")]
        return prefixes

    @staticmethod
    def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Key names of older checkpoints -> today's (the diffusion head's projector moved into the head)."""
        old = "noisy_action_projector."
        return {("action_head." + k if k.startswith(old) else k): v for k, v in state.items()}

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

    def splice(self, embeds: torch.Tensor, prefix: torch.Tensor, attention_mask: torch.Tensor | None,
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

    def bidirectional_mask(self, mask: torch.Tensor | None, embeds: torch.Tensor) -> torch.Tensor:
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

    def encode(self, inputs: ModelInputs, slots: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings of ``input_ids`` and the prefix (image patches, proprio) spliced after BOS; a FiLM
        model conditions its vision tower on the prompt's embeddings (``slots`` excluded)."""
        tokens = self.embed_tokens(inputs.input_ids)
        language = (self.language_embedding(tokens, inputs.attention_mask, slots) if self.film is not None
                    else None)
        return tokens, self.prefix_embeddings(inputs.pixel_values, inputs.proprio, language)

    def slot_states_train(self, inputs: ModelInputs, slot_inputs: torch.Tensor | None = None,
                          extend_prefix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Training pass of a parallel head: one bidirectional pass over the sequence with the action slots
        (found from the labels) zeroed or holding ``slot_inputs``; the final states that predict each slot."""
        slots = inputs.labels > self.action_tokenizer.begin_idx
        tokens, prefix = self.encode(inputs, slots)
        if extend_prefix is not None:
            prefix = extend_prefix(prefix)
        embeds, mask, _ = self.splice(tokens, prefix, inputs.attention_mask, None, slots, slot_inputs)
        hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=self.bidirectional_mask(mask, embeds),
                                           use_cache=False).last_hidden_state
        return self._slot_hidden(hidden, slots)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                proprio: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                action_mask: torch.Tensor | None = None) -> VLAOutput:
        """Teacher-forced pass: the head's loss and metrics (normalised space). ``action_mask`` [B, chunk] marks
        the chunk steps inside their episode; padded steps never count in the loss."""
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"batch sizes differ: input_ids {input_ids.shape[0]}, "
                             f"pixel_values {pixel_values.shape[0]}")
        inputs = ModelInputs(input_ids, pixel_values, attention_mask, labels, proprio, actions, action_mask)
        out = self.action_head.loss(self, inputs)
        return VLAOutput(loss=out.loss, logits=out.logits, metrics=out.metrics, predicted_actions=out.predicted_actions)

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
        empty = self.llm.empty_token_id
        rows = [list(p) if p[-1] == empty else [*p, empty] for p in prompts]
        length = max(len(r) for r in rows)
        if all(len(r) == length for r in rows):
            return torch.tensor(rows, dtype=torch.long), None
        pad = self.llm.pad_token_id
        ids = torch.tensor([[r[0]] + [pad] * (length - len(r)) + r[1:] for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] + [0] * (length - len(r)) + [1] * (len(r) - 1) for r in rows], dtype=torch.long)
        return ids, mask

    @torch.inference_mode()
    def generate_action_ids(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                            attention_mask: torch.Tensor | None, num_tokens: int,
                            proprio: torch.Tensor | None = None, stop_id: int | None = None) -> torch.Tensor:
        """Greedy decoding of ``num_tokens`` ids: [B, num_tokens]; with ``stop_id`` (EOS), at most that many,
        ending once every row has emitted it (rows that stopped early continue with ids to be ignored).
        Llama-style decoders run with our static KV cache (``model/decoding.py``); others through transformers'
        ``generate``."""
        device = self.device
        prefix = self.prefix_embeddings(pixel_values.to(device), None if proprio is None else proprio.to(device))
        mask = attention_mask.to(device) if attention_mask is not None else None
        embeds, mask, _ = self.splice(self.embed_tokens(input_ids.to(device)), prefix, mask, None)
        lm = self.language_model
        if supports_static_decoding(lm):
            return greedy_decode(lm, embeds, mask, num_tokens, compile=self.compiled_inference, stop_id=stop_id)
        until = {"min_new_tokens": num_tokens} if stop_id is None else {"eos_token_id": stop_id}
        out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=num_tokens, do_sample=False,
                          pad_token_id=0 if stop_id is None else stop_id, **until)
        return out[:, -num_tokens:]

    def parallel_runner(self, inputs: ModelInputs, n_slots: int) -> ParallelPass:
        """The inference pass of a parallel head over the prompts with ``n_slots`` action slots and EOS
        appended; call it (once, or once per denoising step) for the final states that predict each slot."""
        return ParallelPass(self, inputs, n_slots)

    @torch.inference_mode()
    def slot_states(self, inputs: ModelInputs, n_slots: int) -> torch.Tensor:
        """One parallel pass with zero (or learned) slots: [B, n_slots, H]."""
        return self.parallel_runner(inputs, n_slots)()

    @torch.inference_mode()
    def sample_actions(self, inputs: ModelInputs, action_dim: int | None = None) -> np.ndarray:
        """The head's normalised actions [B, chunk, D] for packed prompts (``pack_prompts``)."""
        device = self.device
        moved = ModelInputs(inputs.input_ids.to(device), inputs.pixel_values.to(device),
                            None if inputs.attention_mask is None else inputs.attention_mask.to(device),
                            proprio=None if inputs.proprio is None else inputs.proprio.to(device))
        return self.action_head.sample(self, moved, action_dim or self.config.action_dim)

    def parallel_decode(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                        attention_mask: torch.Tensor | None, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """OFT: normalised actions [B, chunk, D] from the head's parallel pass(es)."""
        return torch.from_numpy(self.sample_actions(ModelInputs(input_ids, pixel_values, attention_mask,
                                                                proprio=proprio)))

    def predict_observations(self, observations: list[dict[str, Any]], unnorm_key: str | None = None
                             ) -> np.ndarray:
        """Observations (cameras by name, ``instruction``, raw ``state``) -> action chunks [B, chunk, D] in
        robot units. The processor maps inputs and outputs exactly as in training."""
        key = self.resolve_unnorm_key(unnorm_key)
        prompts, pixel_values, proprio = self.processor.observations_to_inputs(observations, key)
        return self._predict(prompts, pixel_values, proprio, key)

    def _predict(self, prompts: list[list[int]], pixel_values: torch.Tensor, proprio: torch.Tensor | None,
                 key: str | None) -> np.ndarray:
        if len(prompts) != pixel_values.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images for {len(prompts)} prompts")
        ids, mask = self.pack_prompts(prompts)
        normalized = self.sample_actions(ModelInputs(ids, pixel_values, mask, proprio=proprio),
                                         self.action_dim_for(key))
        return self.processor.to_robot_actions(normalized, key)

    def predict_action(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None, unnorm_key: str | None = None,
                       image: ImageLike | list[ImageLike] | None = None,
                       instruction: str | list[str] | None = None,
                       wrist_image: ImageLike | list[ImageLike] | None = None,
                       proprio: np.ndarray | torch.Tensor | None = None,
                       images: dict[str, Any] | list[dict[str, Any]] | None = None, **_: Any) -> np.ndarray:
        """Actions in robot units: [D] for one input, [B, D] for a batch; with action chunks, [chunk, D] and
        [B, chunk, D].

        Give ``image`` (and, for more cameras, ``images`` by camera name or ``wrist_image``) + ``instruction``
        (the processor runs), or ``pixel_values`` + ``input_ids``. ``proprio`` is in raw units.
        """
        key = self.resolve_unnorm_key(unnorm_key)
        if image is not None or images is not None:
            if instruction is None:
                raise ValueError("predict_action(image=...) needs an instruction")
            observations, single = _observations(image, instruction, wrist_image, images, proprio)
            prompts, pixel_values, state = self.processor.observations_to_inputs(observations, key)
        else:
            if pixel_values is None or input_ids is None:
                raise ValueError("predict_action needs image + instruction, or pixel_values + input_ids")
            if pixel_values.ndim == 3:
                pixel_values = pixel_values[None]
            if input_ids.ndim == 1:
                input_ids = input_ids[None]
            single = input_ids.shape[0] == 1
            masks = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            prompts = [row[m.bool()].tolist() for row, m in zip(input_ids, masks, strict=True)]
            state = None
            if self.config.proprio_dim and proprio is not None:
                rows = np.asarray(proprio, dtype=np.float32).reshape(len(prompts), -1)
                state = torch.from_numpy(np.stack([self.processor.normalize_proprio(r, key) for r in rows]))
        actions = self._predict(prompts, pixel_values, state, key)
        if self.config.action_chunk == 1:
            actions = actions[:, 0]
        return actions[0] if single else actions


def _observations(image: Any, instruction: str | list[str], wrist_image: Any, images: Any, proprio: Any
                  ) -> tuple[list[dict[str, Any]], bool]:
    """``predict_action``'s keyword inputs -> one observation per row, and whether the call was unbatched."""
    single = not isinstance(image if image is not None else images, list | tuple)

    def rows(value: Any, n: int) -> list[Any]:
        if value is None:
            return [None] * n
        return [value] if single else list(value)

    n = 1 if single else len(image if image is not None else images)
    texts = [instruction] * n if isinstance(instruction, str) else list(instruction)
    if len(texts) != n:
        raise ValueError(f"got {n} images for {len(texts)} instructions")
    states = rows(None if proprio is None else (proprio if single else list(np.asarray(proprio))), n)
    out = []
    for img, wrist, named, text, state in zip(rows(image, n), rows(wrist_image, n), rows(images, n), texts, states,
                                              strict=True):
        obs = {"instruction": text, "images": dict(named or {})}
        if img is not None:
            obs["image"] = img
        if wrist is not None:
            obs["wrist_image"] = wrist
        if state is not None:
            obs["state"] = state
        out.append(obs)
    return out, single


class ParallelPass:
    """A bidirectional pass over prompt + action slots + EOS whose prefix and token embeddings are built once;
    each call runs the LM with the given slot inputs (the diffusion head calls it once per denoising step)."""

    def __init__(self, vla: VLA, inputs: ModelInputs, n_slots: int) -> None:
        ids, mask = inputs.input_ids, inputs.attention_mask
        b = ids.shape[0]
        placeholder = ids.new_full((b, n_slots), vla.action_tokenizer.begin_idx + 1)
        eos = ids.new_full((b, 1), vla.llm.eos_token_id)
        ids = torch.cat([ids, placeholder, eos], dim=1)
        self.slots = torch.zeros_like(ids, dtype=torch.bool)
        self.slots[:, -1 - n_slots:-1] = True
        self.mask = None if mask is None else torch.cat([mask, mask.new_ones((b, n_slots + 1))], dim=1)
        self.vla, self.n_slots = vla, n_slots
        self.tokens, self.prefix = vla.encode(ModelInputs(ids, inputs.pixel_values, self.mask,
                                                          proprio=inputs.proprio), self.slots)
        self.dtype = self.prefix.dtype
        lm = vla.language_model
        self.fast = supports_static_decoding(lm)
        self.run = (compiled(bidirectional_hidden, True) if (self.fast and vla.compiled_inference)
                    else bidirectional_hidden)

    def __call__(self, slot_inputs: torch.Tensor | None = None,
                 extend_prefix: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Final hidden states at the positions that predict each slot (the one before it, OFT's alignment)."""
        vla, n = self.vla, self.n_slots
        prefix = self.prefix if extend_prefix is None else extend_prefix(self.prefix)
        embeds, full_mask, _ = vla.splice(self.tokens, prefix, self.mask, None, self.slots, slot_inputs)
        lm = vla.language_model
        if self.fast:
            hidden = self.run(lm, embeds, full_mask, keep_last=n + 2)
        else:
            position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0) if full_mask is not None else None
            hidden = lm.model(inputs_embeds=embeds, attention_mask=vla.bidirectional_mask(full_mask, embeds),
                              position_ids=position_ids, use_cache=False).last_hidden_state
        return hidden[:, -2 - n:-2]
