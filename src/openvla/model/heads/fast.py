"""pi0-FAST's head: an action chunk as FAST tokens (DCT + BPE, ``model/fast_tokenizer.py``) on the ids the LLM
reserves for actions, predicted by the LM's own output layer and decoded greedily until EOS, so a smooth chunk
takes a few passes instead of one per scalar.

FAST token k is LLM id ``action_ids.stop - 1 - k`` (the top of the reserved range, as OpenVLA's bins), so the
codec's vocabulary must fit in ``n_action_bins``. Generated sequences are read up to their EOS (or whole, when
none came within the codec's longest chunk). One with the wrong number of coefficients is repaired: extra ones
are dropped, missing ones are 0 (they are the highest frequencies); ``repaired`` counts them. One holding an id
that is not a FAST token, or no token, becomes the fallback: the zero chunk (the middle of the normalised range);
``malformed`` counts them. The first of each warns.
"""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from openvla.model.fast_tokenizer import FastTokenizer
from openvla.model.heads.base import ActionHead, HeadOutput, masked_mean, valid_steps
from openvla.model.heads.flow import hold_last_valid
from openvla.model.llm_spec import LLMSpec

if TYPE_CHECKING:
    from openvla.config import VLAConfig
    from openvla.model.vla import VLA, ModelInputs

IGNORE_INDEX = -100
_CODECS: dict[Any, tuple[Any, FastTokenizer]] = {}  # built once per config's codec (target_ids runs per sample)


def codec_for(config: VLAConfig) -> FastTokenizer:
    """The FAST codec a config carries: its trained tokenizer, or (None) the DCT-only codec of the reserved ids."""
    data = config.fast_tokenizer
    if isinstance(data, str):  # a file from `openvla fast-tokenizer`: kept inline from here on, so checkpoints carry it
        with open(data) as f:
            data = config.fast_tokenizer = json.load(f)
    key = id(data) if data is not None else (config.action_chunk, config.action_dim, config.n_action_bins)
    cached = _CODECS.get(key)
    if cached is None or cached[0] is not data:
        codec = (FastTokenizer.from_dict(data) if data is not None
                 else FastTokenizer.untrained(config.action_chunk, config.action_dim, config.n_action_bins))
        cached = _CODECS[key] = (data, codec)
    return cached[1]


class FastHead(ActionHead):
    name = "fast"
    needs_parallel = False
    uses_lm_head = True

    def __init__(self, config: VLAConfig) -> None:
        super().__init__(config)
        self.config = config
        self.spec = LLMSpec.from_config(config)
        self.malformed = 0  # generated chunks that decoded to the fallback
        self.repaired = 0  # generated chunks with the wrong number of coefficients
        self.decoded = 0  # chunks decoded
        self.tokens = 0  # tokens they took, each one's EOS included
        self.calls = 0  # batches decoded
        self.passes = 0  # LLM passes spent on them (the prefill's first token included)

    @property
    def codec(self) -> FastTokenizer:
        return codec_for(self.config)

    @classmethod
    def check_config(cls, config: VLAConfig) -> None:
        if config.parallel_decoding:
            raise ValueError("the fast head decodes autoregressively until EOS; set parallel_decoding false")
        codec = codec_for(config)
        if (codec.chunk, codec.dim) != (config.action_chunk, config.action_dim):
            raise ValueError(f"the FAST tokenizer codes chunks of ({codec.chunk}, {codec.dim}) but the model "
                             f"predicts ({config.action_chunk}, {config.action_dim}); retrain it with "
                             "`openvla fast-tokenizer --chunk N` on this data")
        if codec.vocab_size > config.n_action_bins:
            raise ValueError(f"the FAST tokenizer has {codec.vocab_size} tokens but the LLM reserves "
                             f"n_action_bins={config.n_action_bins} action ids: raise n_action_bins (the tokenizer "
                             "must leave room) or retrain with a smaller --vocab-size")

    @classmethod
    def target_ids(cls, action_tokenizer: Any, actions: np.ndarray, config: VLAConfig | None = None) -> list[int]:
        if config is None:
            raise ValueError("the fast head's targets need the model config (its FAST tokenizer)")
        top = LLMSpec.from_config(config).action_ids.stop - 1
        return [top - k for k in codec_for(config).encode(actions)]

    def to_codec_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM ids -> FAST token ids (outside [0, vocab) when the id is not a FAST token)."""
        return self.spec.action_ids.stop - 1 - ids

    def fast_tokens(self, llm_ids: list[int]) -> list[int]:
        """One row of generated LLM ids -> its FAST token ids, up to its EOS (or all of them)."""
        eos = self.spec.eos_token_id
        row = llm_ids[: llm_ids.index(eos)] if eos in llm_ids else llm_ids
        return [self.spec.action_ids.stop - 1 - i for i in row]

    def decode(self, llm_ids: list[int]) -> np.ndarray:
        """One row of generated LLM ids -> its chunk [chunk, D]: repaired or the fallback when malformed."""
        tokens = self.fast_tokens(llm_ids)
        self.decoded += 1
        self.tokens += len(tokens) + 1
        chunk = self.codec.decode(tokens, repair=True)
        if chunk is None:
            if self.malformed == 0:
                warnings.warn("the fast head generated ids that are not FAST tokens; returning the zero chunk "
                              "(counted in action_head.malformed)", stacklevel=2)
            self.malformed += 1
            return np.zeros((self.codec.chunk, self.codec.dim))
        if self.codec.decode(tokens) is None:
            if self.repaired == 0:
                warnings.warn("the fast head generated the wrong number of DCT coefficients; dropping extra ones, "
                              "0 for missing ones (counted in action_head.repaired)", stacklevel=2)
            self.repaired += 1
        return chunk

    # --------------------------------------------------------------------------------------- training
    def retarget(self, vla: VLA, inputs: ModelInputs) -> ModelInputs:
        """Rows whose chunk runs past the episode get targets re-encoded with the last valid action held (what
        the loader pads with): the DCT mixes every step into every token, so padded values must not differ."""
        if inputs.action_mask is None or inputs.actions is None or inputs.labels is None:
            return inputs
        held = hold_last_valid(inputs.actions, inputs.action_mask)
        rows = [i for i in range(held.shape[0]) if not torch.equal(held[i], inputs.actions[i])]
        if not rows:
            return inputs
        ids, labels, mask = [], [], []
        for i in range(held.shape[0]):
            real = inputs.labels[i] != IGNORE_INDEX
            start = int(real.long().argmax())
            prompt = inputs.input_ids[i, :start].tolist()
            target = (self.target_ids(None, held[i].cpu().numpy(), self.config) + [self.spec.eos_token_id]
                      if i in rows else inputs.labels[i, real].tolist())
            ids.append(prompt + target)
            labels.append([IGNORE_INDEX] * len(prompt) + target)
        width = max(len(r) for r in ids)
        device = inputs.input_ids.device
        pad = self.spec.pad_token_id
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], device=device)
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in ids], device=device)
        label_ids = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels], device=device)
        return type(inputs)(input_ids, inputs.pixel_values, mask, label_ids, inputs.proprio, held, None)

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        steps = valid_steps(inputs, vla.config.action_chunk)
        inputs = self.retarget(vla, inputs)
        tokens, prefix = vla.encode(inputs)
        embeds, mask, labels = vla.splice(tokens, prefix, inputs.attention_mask, inputs.labels)
        logits = vla.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        if labels is None:
            return HeadOutput(loss=None, logits=logits)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            preds, gt = logits[:, :-1].argmax(-1), labels[:, 1:]
            is_fast = (gt != IGNORE_INDEX) & (gt != self.spec.eos_token_id)
            metrics = {"action_accuracy": (preds[is_fast] == gt[is_fast]).float().mean()}
            predicted = self.teacher_forced_actions(preds, is_fast).to(logits.device)
            if inputs.actions is not None:
                metrics["action_l1"] = masked_mean((predicted - inputs.actions.to(predicted)).abs(), steps)
        return HeadOutput(loss=loss, metrics=metrics, logits=logits, predicted_actions=predicted)

    def teacher_forced_actions(self, preds: torch.Tensor, is_fast: torch.Tensor) -> torch.Tensor:
        """The chunks the argmax at each FAST target position decodes to [B, chunk, D] (the fallback where it
        does not): what greedy decoding returns when its earlier tokens were right."""
        rows = []
        for i in range(preds.shape[0]):
            chunk = self.codec.decode(self.to_codec_ids(preds[i, is_fast[i]]).tolist(), repair=True)
            rows.append(np.zeros((self.codec.chunk, self.codec.dim)) if chunk is None else chunk)
        return torch.from_numpy(np.stack(rows)).float()

    # -------------------------------------------------------------------------------------- inference
    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        ids = vla.generate_action_ids(inputs.input_ids, inputs.pixel_values, inputs.attention_mask,
                                      self.codec.max_tokens + 1, inputs.proprio, stop_id=self.spec.eos_token_id)
        self.calls += 1
        self.passes += ids.shape[1]
        return np.stack([self.decode(row) for row in ids.tolist()])
