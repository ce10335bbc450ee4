"""Our own checkpoint format: vla_config.json + model.safetensors + statistics + tokenizer files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from openvla.checkpoint.common import (
    STATS_FILE,
    instantiate,
    load_tokenizer,
    read_json,
    read_norm_stats,
    read_safetensors,
)
from openvla.checkpoint.reference_files import copy_remote_code
from openvla.checkpoint.space import disk_full_error
from openvla.config import VLAConfig

CONFIG_FILE = "vla_config.json"


def is_native_dir(directory: Path) -> bool:
    return (directory / CONFIG_FILE).exists()


def save_vla(model, directory: str | Path) -> Path:
    """Write the model; a tied lm_head is stored once. Files are written whole, then renamed into place."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if getattr(model.language_model.config, "tie_word_embeddings", False):
        state.pop("language_model.lm_head.weight", None)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    _atomic(directory / "model.safetensors", lambda p: save_file(tensors, str(p), metadata={"format": "pt"}), need)
    _atomic(directory / STATS_FILE, lambda p: p.write_text(json.dumps(model.config.norm_stats, indent=2)))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory))
    _atomic(directory / CONFIG_FILE, lambda p: p.write_text(model.config.to_json()))
    # a model loaded from a released checkpoint keeps its remote-code files for a later export_openvla
    copy_remote_code(getattr(model, "source_dir", None), directory, warn=False)
    return directory


def load_native(directory: Path, dtype: torch.dtype | None = None):
    config = VLAConfig.from_dict(read_json(directory / CONFIG_FILE))
    config.norm_stats = read_norm_stats(directory, config.norm_stats)
    return instantiate(config, read_safetensors(directory), load_tokenizer(directory), dtype=dtype,
                       source=str(directory))


def _atomic(path: Path, write, need: int = 0) -> None:
    """Write to ``path.tmp``, then rename; a failed write leaves no partial file, and a full disk says so."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(err, path, need)
        if full is not None:
            raise full from err
        raise
    tmp.replace(path)
