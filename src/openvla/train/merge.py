"""Merge a LoRA adapter into its base checkpoint, streaming: read one tensor of the base, add B @ A * scale to
it, write it to the merged shard. The base is never loaded as a model, so merging openvla-7b takes about one
tensor of memory, keeps the base's shard count and dtype, and never holds two copies of the weights.

The merged folder is in our layout or the released OpenVLA one, with the base's statistics plus the
fine-tuning run's, and the run's dataset as the default ``unnorm_key``.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from openvla.checkpoint import resolve_path
from openvla.checkpoint.common import STATS_FILE, read_json, read_norm_stats
from openvla.checkpoint.convert import openvla_to_ours, ours_to_openvla
from openvla.checkpoint.native import CONFIG_FILE, is_native_dir
from openvla.checkpoint.openvla_hf import (
    TOOLKIT_KEY,
    _empty_attn_pool,
    config_from_hf,
    hf_config_for,
    is_openvla_dir,
)
from openvla.checkpoint.reference_files import (
    PREPROCESSOR_FILE,
    make_tokenizer_portable,
    preprocessor_config_for,
)
from openvla.checkpoint.stream import Entry, ShardWriter, read_entries, read_tensor, shard_files, write_index
from openvla.config import VLAConfig

LAYOUTS = ("native", "openvla")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Parameters trained in full beside the adapters (OFT's new modules), in our names; peft does not save them.
TRAINED_WEIGHTS = "trained_weights.safetensors"
_LORA_KEY = re.compile(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight")
VISION = "vision_backbone."
MERGE_ROWS = 1024  # rows of a weight merged at a time
# Files beside the weights that describe the tokenizer or the released model's code; copied unchanged.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json")
_RELEASED_FILES = ("generation_config.json", "preprocessor_config.json")


def save_adapter(peft_model: Any, directory: str | Path) -> Path:
    """A run's adapter folder: peft's files, the statistics the model was trained with, and the parameters
    trained in full beside the adapters (OFT's new modules, which peft does not save): all a merge needs."""
    directory = Path(directory)
    peft_model.save_pretrained(str(directory), save_embedding_layers=False)
    stats = peft_model.get_base_model().config.norm_stats
    (directory / STATS_FILE).write_text(json.dumps(stats, indent=2))
    full = {n.removeprefix("base_model.model."): p.detach().float().contiguous()
            for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n}
    if full:
        save_file(full, str(directory / TRAINED_WEIGHTS), metadata={"format": "pt"})
    return directory


def release_frozen_weights(model: torch.nn.Module) -> None:
    """Give back the resident pages of a memory-mapped model's frozen weights (they stay readable from the
    file): after training, the streaming merge then has the memory the base occupied."""
    from openvla.model.quantize import drop_mapped_pages

    for p in model.parameters():
        if not p.requires_grad:
            drop_mapped_pages(p.data)


@dataclass
class Adapter:
    """A peft LoRA adapter folder, read for merging: per module (our name) A [r, in], B [out, r], scale."""

    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]
    scales: dict[str, float]
    fan_in_fan_out: bool
    replaced: dict[str, torch.Tensor]  # whole tensors the run trained in full (our names)
    norm_stats: dict[str, Any]

    def delta_rows(self, module: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of B @ A * scale in float32, as peft's merge computes the whole."""
        a, b = self.a[module].float(), self.b[module].float()
        d = (b @ a[:, start:stop]).T if self.fan_in_fan_out else b[start:stop] @ a
        return d.mul_(self.scales[module])


def read_adapter(directory: str | Path) -> Adapter:
    """The adapter's weights, scales (lora_alpha / r, or / sqrt(r) with rsLoRA; peft's patterns honoured) and
    the fine-tuning run's statistics."""
    directory = Path(directory)
    if not (directory / ADAPTER_CONFIG).exists():
        raise ValueError(f"{directory} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    cfg = read_json(directory / ADAPTER_CONFIG)
    for key, bad in (("use_dora", True), ("bias", "lora_only"), ("bias", "all")):
        if cfg.get(key) == bad:
            raise ValueError(f"{directory}: {key}={bad!r} adapters are not supported by the merge")
    weights = directory / ADAPTER_WEIGHTS
    if not weights.exists():
        raise ValueError(f"{directory} has no {ADAPTER_WEIGHTS}")
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    replaced: dict[str, torch.Tensor] = {}
    for key, tensor in load_file(str(weights)).items():
        m = _LORA_KEY.fullmatch(key)
        if m:
            (a if m.group(2) == "A" else b)[m.group(1)] = tensor
        elif "lora_" in key:
            raise ValueError(f"{directory}: adapter tensor {key} is not a LoRA A/B matrix; cannot merge it")
        else:  # modules_to_save: the whole tensor
            replaced[key.removeprefix("base_model.model.")] = tensor
    if set(a) != set(b):
        raise ValueError(f"{directory}: LoRA A and B matrices do not pair up: {sorted(set(a) ^ set(b))[:5]}")
    if (directory / TRAINED_WEIGHTS).exists():
        replaced.update(load_file(str(directory / TRAINED_WEIGHTS)))
    scales = {}
    for module, tensor in a.items():
        rank = tensor.shape[0]
        alpha = _pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", 8))
        scales[module] = alpha / rank ** 0.5 if cfg.get("use_rslora") else alpha / rank
    return Adapter(a, b, scales, bool(cfg.get("fan_in_fan_out")), replaced, _run_stats(directory))


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's alpha_pattern / rank_pattern lookup: the first pattern that matches the end of the module name."""
    for pattern, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return value
    return default


def _run_stats(directory: Path) -> dict[str, Any]:
    """Statistics saved with the adapter; adapters written before they were get them from the run folder."""
    if (directory / STATS_FILE).exists():
        return read_json(directory / STATS_FILE)
    run_config = directory.parent / CONFIG_FILE
    return read_json(run_config).get("norm_stats", {}) if run_config.exists() else {}


@dataclass
class Base:
    """A base checkpoint described from its headers only: layout, config, shards and their tensors."""

    directory: Path
    layout: str
    config: VLAConfig
    hf: dict[str, Any] | None  # the released config.json, when the base is in that layout
    shards: list[tuple[Path, list[Entry]]]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(v.kind for v in self.config.vision)

    def parts(self, entry: Entry) -> list[str]:
        """Our keys whose tensors, stacked on dim 0, make this tensor of the base (three for a fused qkv)."""
        if self.layout == "native" or not entry.name.startswith(VISION):
            return [entry.name]
        try:
            return list(openvla_to_ours({entry.name: torch.empty(entry.shape, device="meta")}, self.kinds)[0])
        except KeyError:  # the SigLIP head's q needs its kv sibling; that head is never adapted
            return []


def open_base(path: str | Path) -> Base:
    directory = resolve_path(path)
    shards = [(f, read_entries(f)) for f in shard_files(directory)]
    if is_native_dir(directory):
        config = VLAConfig.from_dict(read_json(directory / CONFIG_FILE))
        layout, hf = "native", None
    elif is_openvla_dir(directory):
        hf = read_json(directory / "config.json")
        meta = {e.name: torch.empty(e.shape, device="meta") for _, entries in shards for e in entries}
        config = config_from_hf(hf, meta)
        layout = "openvla"
    else:
        raise ValueError(f"{directory} is not a checkpoint: no {CONFIG_FILE} (ours) or released config.json")
    config.norm_stats = read_norm_stats(directory, config.norm_stats)
    return Base(directory, layout, config, hf, shards)


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path, layout: str | None = None) -> Path:
    """base checkpoint + peft adapter folder -> a plain checkpoint (``layout`` native or openvla; default: the
    base's) that needs no peft to load."""
    src = open_base(base)
    lora = read_adapter(adapter)
    layout = layout or src.layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    entries = {e.name: e for _, es in src.shards for e in es}
    parts = {name: src.parts(e) for name, e in entries.items()}
    _check_covered(src, lora, parts, entries)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def merged(path: Path, entry: Entry) -> torch.Tensor:
        tensor = read_tensor(path, entry)
        names = parts[entry.name]
        if len(names) == 1 and names[0] in lora.replaced:
            return lora.replaced[names[0]].to(entry.dtype)
        if not names or len(entry.shape) != 2:  # adapters only ever change matrices
            return tensor
        rows = entry.shape[0] // len(names)
        for k, name in enumerate(names):  # a fused qkv holds q, k and v one after the other
            module = name.removesuffix(".weight")
            if not name.endswith(".weight") or module not in lora.a:
                continue
            for start in range(0, rows, MERGE_ROWS):  # in blocks: lm_head's float32 delta alone is 525 MB
                stop = min(rows, start + MERGE_ROWS)
                part = tensor[k * rows + start:k * rows + stop]
                part.copy_(lora.delta_rows(module, start, stop).add_(part))  # float32, rounded once
        return tensor

    if layout == src.layout:
        shards = [[(e.name, e.dtype, e.shape, lambda p=path, e=e: merged(p, e)) for e in entries]
                  for path, entries in src.shards]
    else:
        shards = _converted_shards(src, layout, merged)
    dtype = _write_shards(out, [p.name for p, _ in src.shards], shards, sharded=len(src.shards) > 1)
    _write_metadata(src, lora, out, layout, dtype)
    return out


def _check_covered(src: Base, lora: Adapter, parts: dict[str, list[str]], entries: dict[str, Entry]) -> None:
    """Every adapted module and every replaced tensor must exist in the base with its shape, or the merge would
    drop it or fail half-way."""
    ours = {p for names in parts.values() for p in names}
    lost = sorted({f"{m}.weight" for m in lora.a} - ours) + sorted(set(lora.replaced) - ours)
    wrong = []
    for name, names in parts.items():
        shape = entries[name].shape
        for part in names:
            module = part.removesuffix(".weight")
            if module in lora.a:
                a, b = lora.a[module].shape, lora.b[module].shape
                out_in = (a[1], b[0]) if lora.fan_in_fan_out else (b[0], a[1])
                if len(shape) != 2 or out_in != (shape[0] // len(names), shape[1]):
                    wrong.append(f"{part}: adapter {out_in}, base {shape}")
    if lost or wrong:
        raise ValueError(f"the adapter does not fit the base {src.directory}: {len(lost)} tensors the base lacks "
                         f"{lost[:5]}, {len(wrong)} of other shapes {wrong[:3]}; was it trained on another base?")


def _converted_shards(src: Base, layout: str, merged) -> list[list[tuple]]:
    """Shards for the other layout: the vision towers (under 2 GB for openvla-7b) are merged and converted in
    memory and go to the first shard that held vision weights; everything else streams by name."""
    first = next((i for i, (_, entries) in enumerate(src.shards) if any(e.name.startswith(VISION)
                                                                         for e in entries)), 0)
    if src.config.llm.get("tie_word_embeddings"):
        raise ValueError("converting a tied-embedding model between layouts while merging is not supported; "
                         "merge in the base's layout, then export with openvla.checkpoint.export_openvla")
    shards: list[list[tuple]] = []
    for i, (path, entries) in enumerate(src.shards):
        items = []
        if i == first:
            vision = {e.name: merged(p, e) for p, es in src.shards for e in es if e.name.startswith(VISION)}
            if layout == "native":
                vision, unknown = openvla_to_ours(vision, src.kinds)
                if unknown:
                    raise ValueError(f"{src.directory}: vision weights not understood: {unknown[:5]}")
            else:
                vision = ours_to_openvla(vision, src.kinds)
                siglip = next((v for v in src.config.vision if v.kind == "siglip"), None)
                if siglip is not None and not siglip.use_head:
                    prefix = "vision_backbone.fused_featurizer." if len(src.kinds) == 2 else \
                        "vision_backbone.featurizer."
                    vision.update(_empty_attn_pool(prefix, siglip, next(iter(vision.values())).dtype))
            items += [(k, t.dtype, tuple(t.shape), lambda t=t: t) for k, t in vision.items()]
        items += [(e.name, e.dtype, e.shape, lambda p=path, e=e: merged(p, e))
                  for e in entries if not e.name.startswith(VISION)]
        shards.append(items)
    return shards


def _write_shards(out: Path, names: list[str], shards: list[list[tuple]], sharded: bool) -> torch.dtype:
    """Write each shard tensor by tensor; returns the dtype most of the weights have (for config.json)."""
    weight_map: dict[str, str] = {}
    total = 0
    sizes: dict[torch.dtype, int] = {}
    for name, items in zip(names, shards, strict=True):
        writer = ShardWriter(out / name, [(k, dtype, shape) for k, dtype, shape, _ in items])
        try:
            for key, dtype, shape, produce in items:
                writer.write(key, produce())
                weight_map[key] = name
                sizes[dtype] = sizes.get(dtype, 0) + torch.Size(shape).numel()
        finally:
            writer.close()
        total += writer.total_size
    if sharded:
        write_index(out, weight_map, total)
    return max(sizes, key=sizes.get)


def _merged_stats(src: Base, lora: Adapter) -> tuple[dict[str, Any], str | None]:
    """The base's statistics plus the run's; the default key is the one dataset the run added or changed."""
    stats = {**src.config.norm_stats, **lora.norm_stats}
    own = [k for k, v in lora.norm_stats.items() if src.config.norm_stats.get(k) != v]
    default = own[0] if len(own) == 1 else src.config.default_unnorm_key
    return stats, default


def _write_metadata(src: Base, lora: Adapter, out: Path, layout: str, dtype: torch.dtype) -> None:
    stats, default = _merged_stats(src, lora)
    copies = _TOKENIZER_FILES + (_RELEASED_FILES if layout == "openvla" else ())
    for name in copies:
        if (src.directory / name).exists() and src.directory != out:
            shutil.copyfile(src.directory / name, out / name)
    if layout == "openvla":
        for f in src.directory.glob("*.py"):  # the released model's remote code, if the base has it
            shutil.copyfile(f, out / f.name)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2))
    config = copy.deepcopy(src.config)
    config.norm_stats, config.default_unnorm_key = stats, default
    if layout == "native":
        (out / CONFIG_FILE).write_text(config.to_json())
        return
    hf = copy.deepcopy(src.hf) if src.hf is not None else hf_config_for(config)
    hf["norm_stats"] = stats
    hf["torch_dtype"] = str(dtype).removeprefix("torch.")
    if default is not None:
        hf.setdefault(TOOLKIT_KEY, {})["default_unnorm_key"] = default
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    if not (out / PREPROCESSOR_FILE).exists():  # a base in our layout has none: the reference's processor needs it
        (out / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config_for(config), indent=2))
    if (out / "tokenizer.json").exists():
        make_tokenizer_portable(out)
    if not (out / "generation_config.json").exists():
        (out / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": hf.get("pad_token_id")}, indent=2))
