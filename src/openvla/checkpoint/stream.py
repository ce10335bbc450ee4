"""Tensor-at-a-time safetensors: read one tensor with a plain file read (no mapping, so it lands in the page
cache, not in the process), and write a shard tensor by tensor. A 7B model is rewritten with about one tensor
of memory."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from openvla.checkpoint.common import CheckpointError, read_json

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
INDEX_FILE = "model.safetensors.index.json"


@dataclass
class Entry:
    """One tensor of a shard: where its bytes are and what they hold."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int


def shard_files(directory: Path) -> list[Path]:
    """The shards listed in ``model.safetensors.index.json`` (in name order), or ``model.safetensors``."""
    index = directory / INDEX_FILE
    if index.exists():
        files = [directory / s for s in sorted(set(read_json(index)["weight_map"].values()))]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{directory}: shards listed in {INDEX_FILE} are missing: {missing}")
        return files
    if (directory / "model.safetensors").exists():
        return [directory / "model.safetensors"]
    raise CheckpointError(f"{directory} has no model.safetensors or {INDEX_FILE}")


def read_entries(path: Path) -> list[Entry]:
    """The tensors of one safetensors file, in the order their bytes are stored."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"cannot read {path}: shorter than a safetensors header")
        size = struct.unpack("<Q", head)[0]
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read {path}: bad safetensors header ({err})") from err
    header.pop("__metadata__", None)
    entries = []
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}, which this reader does not know")
        begin, end = info["data_offsets"]
        entries.append(Entry(name, DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + begin, end - begin))
    return sorted(entries, key=lambda e: e.start)


def read_tensor(path: Path, entry: Entry) -> torch.Tensor:
    """One tensor, read into memory of its own."""
    buf = torch.empty(entry.nbytes, dtype=torch.uint8)
    with open(path, "rb") as f:
        f.seek(entry.start)
        got = f.readinto(memoryview(buf.numpy()))
    if got != entry.nbytes:
        raise CheckpointError(f"cannot read {path}: tensor {entry.name} is truncated ({got} of {entry.nbytes} bytes)")
    return buf.view(entry.dtype).reshape(entry.shape)


class ShardWriter:
    """Writes one safetensors file whose tensors (names, dtypes, shapes) are known up front, one at a time and
    in that order; the file appears under its name only when complete."""

    def __init__(self, path: Path, specs: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.order = [name for name, _, _ in specs]
        self.specs = {name: (dtype, tuple(shape)) for name, dtype, shape in specs}
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, dtype, shape in specs:
            nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        self.total_size = offset
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self.file = open(self.tmp, "wb")
        self.file.write(struct.pack("<Q", len(raw)) + raw)
        self.next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.next >= len(self.order) or name != self.order[self.next]:
            raise ValueError(f"{self.path.name}: expected tensor {self.order[self.next:self.next + 1]}, got {name}")
        dtype, shape = self.specs[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"{self.path.name}: {name} is {tensor.dtype} {tuple(tensor.shape)}, declared "
                             f"{dtype} {shape}")
        self.file.write(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
        self.next += 1

    def close(self) -> None:
        self.file.close()
        if self.next != len(self.order):
            self.tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path.name}: {len(self.order) - self.next} tensors were never written")
        self.tmp.replace(self.path)


def write_index(directory: Path, weight_map: dict[str, str], total_size: int) -> None:
    """``model.safetensors.index.json`` for sharded weights (the layout transformers writes)."""
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
