"""Checkpoints: ours (native) and the released OpenVLA Hugging Face layout."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from openvla.checkpoint.common import CheckpointError
from openvla.checkpoint.native import is_native_dir, load_native, save_vla
from openvla.checkpoint.openvla_hf import export_openvla, is_openvla_dir, load_openvla_hf

__all__ = ["CheckpointError", "load_vla", "save_vla", "export_openvla", "resolve_path"]


def resolve_path(path: str | Path) -> Path:
    """A local directory, or a Hub repo id fetched with snapshot_download when the network is allowed."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{local} is a file; pass the checkpoint directory that holds it")
        return local
    text = str(path)
    looks_like_repo = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_repo:
        raise CheckpointError(f"checkpoint directory {local} does not exist")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise CheckpointError(
            f"{text!r} is not a local directory and HF_HUB_OFFLINE is set, so it cannot be downloaded here. "
            f"Download the folder elsewhere (e.g. `huggingface-cli download {text} --local-dir DIR`) and pass DIR.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text))
    except Exception as err:
        raise CheckpointError(f"could not download {text!r} ({err}); download the folder and pass its path") from err


def load_vla(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """Load a VLA from our format or the released OpenVLA layout; the format is detected from the files."""
    directory = resolve_path(path)
    if is_native_dir(directory):
        model = load_native(directory, dtype)
    elif is_openvla_dir(directory):
        model = load_openvla_hf(directory, dtype)
    else:
        raise CheckpointError(f"{directory} is not a checkpoint: it has neither vla_config.json (ours) nor a "
                              f"config.json with model_type 'openvla' (released layout)")
    model.source_dir = directory  # saves and exports carry its remote-code files over
    return model.to(device) if device is not None else model
