"""TFRecord files of ``tf.train.Example`` protobufs, read and written without TensorFlow.

A record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``. An
Example is ``Features{map<string, Feature>}``; a Feature holds one of BytesList (field 1), FloatList
(field 2, packed float32) or Int64List (field 3, packed varints). This module decodes those to Python
lists of bytes or numpy arrays, and encodes them back (for tests and tools).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

Value = list[bytes] | np.ndarray


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # google-crc32c (the data extra): hardware CRC, ~15 GB/s; the pure-Python loop is ~10 MB/s
    from google_crc32c import value as _crc32c_fast
except ImportError:  # pragma: no cover - depends on the install
    _crc32c_fast = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, with google-crc32c when installed."""
    if _crc32c_fast is not None:
        return _crc32c_fast(bytes(data))
    return _crc32c_python(data)


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """The records of one TFRecord file; a truncated or corrupt file raises ValueError naming it.

    ``verify`` checks each record's data CRC (flipped bytes); the length CRC is always checked.
    """
    path = Path(path)
    if verify and _crc32c_fast is None:
        warnings.warn("google-crc32c is not installed: TFRecord checksums are checked in pure Python (slow); "
                      "`pip install google-crc32c`, or turn the check off (verify_checksums=False)", stacklevel=2)
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord file: record {index} header cut short")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise ValueError(f"{path}: corrupt TFRecord file: bad length checksum of record {index}")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: truncated TFRecord file: record {index} has {len(data)} of "
                                 f"{length} bytes")
            if verify and struct.unpack("<I", footer)[0] != masked_crc(data):
                raise ValueError(f"{path}: corrupt TFRecord file: bad data checksum of record {index} (flipped "
                                 f"bytes; download the file again)")
            yield data
            index += 1


def count_records(path: str | Path) -> int:
    """The number of records in a TFRecord file, from its headers alone (a cut-off record raises ValueError)."""
    path = Path(path)
    size, count, pos = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord file: record {count} header cut short")
            (length,) = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise ValueError(f"{path}: corrupt TFRecord file: bad length checksum of record {count}")
            pos += 12 + length + 4
            if pos > size:
                have = min(size - (pos - length - 4), length)
                raise ValueError(f"{path}: truncated TFRecord file: record {count} has {have} of {length} bytes")
            f.seek(pos)
            count += 1
    return count


def write_records(path: str | Path, records: Iterable[bytes]) -> None:
    """Write records to a TFRecord file."""
    with open(path, "wb") as f:
        for data in records:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data)))


# -- protobuf wire format -----------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: ints for varints, bytes/memoryview for the rest."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("protobuf message cut short")
        yield number, wire, value


def _int64s(values: list[int]) -> np.ndarray:
    arr = np.array(values, dtype=np.uint64)
    return arr.view(np.int64)


def _decode_feature(buf: bytes) -> Value:
    for kind, _, payload in _fields(buf):
        if kind == 1:  # BytesList
            return [bytes(v) for _, _, v in _fields(payload)]
        if kind == 2:  # FloatList: packed (wire 2) or one fixed32 each (wire 5)
            parts = [np.frombuffer(v, "<f4") for _, _, v in _fields(payload)]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if kind == 3:  # Int64List: packed varints or one varint each
            values: list[int] = []
            for _, wire, v in _fields(payload):
                if wire == 0:
                    values.append(v)
                else:
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        values.append(x)
            return _int64s(values)
    return []


def decode_example(data: bytes) -> dict[str, Value]:
    """A serialised ``tf.train.Example`` as {key: list of bytes | float32 array | int64 array}."""
    out: dict[str, Value] = {}
    for number, _, features in _fields(data):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            key, value = "", b""
            for n, _, v in _fields(entry):
                if n == 1:
                    key = bytes(v).decode()
                elif n == 2:
                    value = v
            out[key] = _decode_feature(value)
    return out


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_feature(value: object) -> bytes:
    if isinstance(value, (bytes, str)):
        value = [value]
    if isinstance(value, list) and (not value or isinstance(value[0], (bytes, str))):
        items = [v.encode() if isinstance(v, str) else v for v in value]
        return _field(1, b"".join(_field(1, v) for v in items))
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind == "f":
        return _field(2, _field(1, arr.astype("<f4").tobytes()))
    if arr.dtype.kind in "iub":
        return _field(3, _field(1, b"".join(_encode_varint(int(v)) for v in arr.astype(np.int64))))
    raise TypeError(f"cannot encode a {arr.dtype} feature")


def encode_example(features: dict[str, object]) -> bytes:
    """Serialise {key: bytes/str list, float array or int/bool array} as a ``tf.train.Example``."""
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, _encode_feature(v))) for k, v in features.items())
    return _field(1, entries)
