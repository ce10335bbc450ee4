"""Merge a LoRA adapter into its base model and save the result with its statistics and tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from openvla.model.vla import VLA


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """base checkpoint + peft adapter folder -> a plain checkpoint that needs no peft to load."""
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise ValueError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    vla = VLA.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(vla, str(adapter)).merge_and_unload()
    return merged.save_pretrained(out)
