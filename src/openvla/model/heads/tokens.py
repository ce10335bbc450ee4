"""OpenVLA's head: actions as the last 256 ids of the vocabulary, predicted by the LM's own output layer,
decoded token by token (OpenVLA) or all at once over zero-embedded slots (OFT's parallel decoding)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from openvla.model.heads.base import ActionHead, HeadOutput

if TYPE_CHECKING:
    from openvla.model.vla import VLA, ModelInputs

IGNORE_INDEX = -100


class TokenHead(ActionHead):
    name = "tokens"
    needs_parallel = False
    uses_lm_head = True

    def loss(self, vla: VLA, inputs: ModelInputs) -> HeadOutput:
        labels = inputs.labels
        begin = vla.action_tokenizer.begin_idx
        slots = None
        if labels is not None:  # without labels: the logits only
            slots = labels > begin if vla.config.parallel_decoding else None
            labels = drop_padded_steps(labels, inputs.action_mask, begin, vla.config.action_dim)
        tokens, prefix = vla.encode(inputs, slots)
        embeds, mask, full_labels = vla.splice(tokens, prefix, inputs.attention_mask, labels, slots)
        if vla.config.parallel_decoding:
            mask = vla.bidirectional_mask(mask, embeds)
        logits = vla.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        if labels is None:
            return HeadOutput(loss=None, logits=logits)
        # Next-token cross-entropy in float32 over every labelled position (action tokens and EOS).
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), full_labels[:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            preds = logits[:, prefix.shape[1]:-1].argmax(-1)
            metrics = self._metrics(vla, preds, labels)
            # In eval mode only (it syncs a GPU): what greedy decoding returns when its earlier tokens were right.
            taught = None if vla.training else self._teacher_forced_actions(vla, preds, inputs.labels)
        return HeadOutput(loss=loss, metrics=metrics, logits=logits, predicted_actions=taught)

    @staticmethod
    def _teacher_forced_actions(vla: VLA, preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The actions the argmax at each action position decodes to, [B, chunk, D]."""
        cfg = vla.config
        gt = labels[:, 1:]
        mask = gt > vla.action_tokenizer.begin_idx
        if int(mask.sum()) != gt.shape[0] * cfg.action_slots:
            return None
        return vla.action_tokenizer.decode_torch(preds[mask]).reshape(gt.shape[0], cfg.action_chunk, cfg.action_dim)

    @staticmethod
    def _metrics(vla: VLA, preds: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token accuracy and L1 between decoded bins, over the valid action-token labels (EOS excluded)."""
        gt = labels[:, 1:]
        mask = gt > vla.action_tokenizer.begin_idx
        if not mask.any():
            return {}
        tok = vla.action_tokenizer
        return {"action_accuracy": (preds[mask] == gt[mask]).float().mean(),
                "action_l1": (tok.decode_torch(preds[mask]) - tok.decode_torch(gt[mask])).abs().mean().float()}

    def sample(self, vla: VLA, inputs: ModelInputs, action_dim: int) -> np.ndarray:
        cfg = vla.config
        b = inputs.input_ids.shape[0]
        if cfg.parallel_decoding:
            hidden = vla.slot_states(inputs, cfg.action_slots)
            ids = vla.language_model.lm_head(hidden).argmax(-1)
            return vla.action_tokenizer.decode(ids).reshape(b, cfg.action_chunk, cfg.action_dim)
        ids = vla.generate_action_ids(inputs.input_ids, inputs.pixel_values, inputs.attention_mask,
                                      action_dim * cfg.action_chunk, inputs.proprio)
        return vla.action_tokenizer.decode(ids).reshape(b, cfg.action_chunk, action_dim)


def drop_padded_steps(labels: torch.Tensor, action_mask: torch.Tensor | None, begin_idx: int,
                      action_dim: int) -> torch.Tensor:
    """Labels with the action tokens of chunk steps past the episode's end set to IGNORE_INDEX, and the EOS of
    such rows too (it is predicted from the padded tokens)."""
    if action_mask is None or bool(action_mask.all()):
        return labels
    is_action = labels > begin_idx
    valid = action_mask.to(labels.device).bool().repeat_interleave(action_dim, dim=1)
    if int(is_action.sum()) != valid.numel():
        raise ValueError(f"each row needs {valid.shape[1]} action labels to mask padded chunk steps, got "
                         f"{is_action.sum(1).tolist()}")
    out = labels.clone()
    out[is_action] = torch.where(valid.reshape(-1), labels[is_action], torch.full_like(labels[is_action],
                                                                                       IGNORE_INDEX))
    padded_rows = ~valid.all(dim=1)
    last = labels.shape[1] - 1 - is_action.flip(1).long().argmax(1)  # each row's last action label
    eos = (last + 1).clamp(max=labels.shape[1] - 1)
    rows = torch.arange(labels.shape[0], device=labels.device)[padded_rows]
    out[rows, eos[padded_rows]] = IGNORE_INDEX
    return out
