"""The files beside the weights that the reference's own loading code needs (transformers 4.40.1, tokenizers
0.19.1): ``preprocessor_config.json`` in PrismaticImageProcessor's form, a tokenizer it can parse, and the
remote-code files that ``trust_remote_code=True`` imports."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

from openvla.config import VLAConfig

REMOTE_CODE = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                      "AutoProcessor": "processing_prismatic.PrismaticProcessor"}
_BICUBIC = 3  # PIL's code, which torchvision's pil_modes_mapping gives for "bicubic"
REFERENCE_EMPTY_TOKEN = 29871  # Llama-2's, which the reference's predict_action appends to every prompt


def preprocessor_config_for(config: VLAConfig) -> dict[str, Any]:
    """What the reference's PrismaticImageProcessor saves for these towers and this resize strategy (its
    constructor runs timm's transform and records the torchvision parameters it would apply)."""
    strategy = config.image_resize_strategy
    sizes = [v.image_size for v in config.vision]
    means, stds = [list(v.mean) for v in config.vision], [list(v.std) for v in config.vision]
    out = {
        "auto_map": PROCESSOR_AUTO_MAP,
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": strategy,
        "input_sizes": [[3, s, s] for s in sizes],
        "interpolations": ["bicubic"] * len(sizes),
        "means": means,
        "processor_class": "PrismaticProcessor",
        "stds": stds,
        "tvf_crop_params": [{"output_size": [s, s]} for s in sizes],
        "tvf_do_letterbox": strategy == "letterbox",
        # the processor keeps the LAST tower's fill (its loop overwrites it), as the reference does
        "tvf_letterbox_fill": [int(x * 255) for x in means[-1]] if strategy == "letterbox" else None,
        "tvf_normalize_params": [{"inplace": False, "mean": _float32(m), "std": _float32(s)}
                                 for m, s in zip(means, stds, strict=True)],
        "tvf_resize_params": [{"antialias": True, "interpolation": _BICUBIC, "max_size": None,
                               "size": [s, s] if strategy == "resize-naive" else s} for s in sizes],
        "use_fused_vision_backbone": len(sizes) == 2,
    }
    return out


def _float32(values: list[float]) -> list[float]:
    """Each value rounded to float32, as the reference's processor stores its normalisation (torch tensors)."""
    return [struct.unpack("f", struct.pack("f", v))[0] for v in values]


def make_tokenizer_portable(directory: Path) -> None:
    """Rewrite the tokenizer files saved in ``directory`` so tokenizers 0.19 / transformers 4.40 read them:
    BPE merges as "a b" strings (newer tokenizers write pairs), a tokenizer class both versions have, and the
    inputs the model takes."""
    path = directory / "tokenizer.json"
    if path.exists():
        data = json.loads(path.read_text())
        merges = (data.get("model") or {}).get("merges")
        if merges and isinstance(merges[0], list):
            if any(" " in part for pair in merges for part in pair):
                warnings.warn(f"{path}: a BPE merge contains a space, which tokenizers < 0.20 cannot read; "
                              "the file is left in the new format", stacklevel=2)
            else:
                data["model"]["merges"] = [" ".join(pair) for pair in merges]
                path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    config_path = directory / "tokenizer_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        if config.get("tokenizer_class") in (None, "TokenizersBackend"):  # transformers 5's name for a fast one
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.pop("backend", None)
        # else a fast tokenizer also returns token_type_ids, which the reference's generate() refuses
        config.setdefault("model_input_names", ["input_ids", "attention_mask"])
        config.setdefault("auto_map", {"AutoProcessor": PROCESSOR_AUTO_MAP["AutoProcessor"]})
        config.setdefault("processor_class", "PrismaticProcessor")
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def copy_remote_code(source: Path | None, directory: Path, warn: bool = True) -> list[str]:
    """Copy the reference's remote-code files from ``source`` (the released checkpoint the model came from);
    with ``warn``, say in one line how to add them when there are none. Returns the names copied."""
    found = [n for n in REMOTE_CODE if source is not None and (Path(source) / n).is_file()]
    for name in found:
        if Path(source).resolve() != directory.resolve():
            shutil.copyfile(Path(source) / name, directory / name)
    missing = [n for n in REMOTE_CODE if not (directory / n).is_file()]
    if missing and warn:
        warnings.warn(f"{directory} has no {', '.join(missing)}, so AutoModelForVision2Seq.from_pretrained(..., "
                      "trust_remote_code=True) cannot open it yet; add them from a released checkpoint: "
                      f"huggingface-cli download openvla/openvla-7b --include '*.py' --local-dir {directory}",
                      stacklevel=3)
    return found


def warn_if_predict_action_fails(config: VLAConfig, directory: Path) -> None:
    """One line when the reference's predict_action cannot run this model: it appends token 29871 (Llama-2's
    empty token), which a model with its own tokenizer does not use (or have)."""
    if config.empty_token_id != REFERENCE_EMPTY_TOKEN:
        warnings.warn(f"{directory}: this model's empty token is {config.empty_token_id}, not Llama-2's 29871, which "
                      "the reference's predict_action appends (and fails on); with the reference code call "
                      f"generate() on the prompt ids + [{config.empty_token_id}] instead (docs/use-a-checkpoint.md)",
                      stacklevel=3)
