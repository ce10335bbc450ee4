"""Shared checkpoint plumbing: reading safetensors (single or sharded), building a model from weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from openvla.checkpoint.convert import UNUSED_OURS
from openvla.config import VLAConfig

STATS_FILE = "dataset_statistics.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message says what is wrong and where."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if index.exists():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise CheckpointError(f"{directory}: shards listed in {index.name} are missing: {missing}")
        files = [directory / s for s in shards]
    elif single.exists():
        files = [single]
    else:
        raise CheckpointError(f"{directory} has no model.safetensors or model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise CheckpointError(f"cannot read {f}: {err}") from err
    return state


def read_norm_stats(directory: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    """``dataset_statistics.json`` beside the weights overrides the config's norm_stats, as the reference does."""
    path = directory / STATS_FILE
    return read_json(path) if path.exists() else fallback


def load_tokenizer(directory: Path) -> Any | None:
    """The tokenizer class named in tokenizer_config.json (AutoTokenizer would consult config.json's
    auto_map, i.e. the reference's remote code)."""
    if not any((directory / f).exists() for f in TOKENIZER_FILES):
        return None
    import transformers

    cfg_path = directory / "tokenizer_config.json"
    name = read_json(cfg_path).get("tokenizer_class") if cfg_path.exists() else None
    cls = getattr(transformers, name or "", None) or transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(str(directory))


def instantiate(config: VLAConfig, state_dict: dict[str, torch.Tensor], tokenizer: Any | None,
                dtype: torch.dtype | None = None, source: str = "checkpoint"):
    """Build a VLA without allocating random weights, then assign ``state_dict`` to it, strictly."""
    from accelerate import init_empty_weights

    from openvla.model.vla import VLA

    with init_empty_weights():
        model = VLA(config, tokenizer)
    state_dict = VLA.upgrade_state_dict(state_dict)
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    expected = set(model.state_dict())
    tied = _tied_keys(model)
    missing = sorted(expected - set(state_dict) - set(UNUSED_OURS) - tied)
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model built from its config.\n"
            f"  missing ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected ({len(unexpected)}): {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(shapes[k])}"
             for k, v in state_dict.items() if tuple(v.shape) != tuple(shapes[k])]
    if wrong:
        raise CheckpointError(f"{source}: shapes differ from the config: {wrong[:10]}")
    model.load_state_dict(state_dict, strict=False, assign=True)
    ref = next(iter(state_dict.values()))
    for name, param in list(model.named_parameters()):
        if param.is_meta:  # parameters with no checkpoint counterpart (unused ones): zeros
            _set_param(model, name, torch.zeros(param.shape, dtype=ref.dtype))
    if tied:
        model.language_model.tie_weights()
    return model.eval()


def _tied_keys(model) -> set[str]:
    lm = model.language_model
    if getattr(lm.config, "tie_word_embeddings", False):
        return {"language_model.lm_head.weight"}
    return set()


def _set_param(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, attr, torch.nn.Parameter(value, requires_grad=False))
