"""Wire formats of `POST /act`: json-numpy bodies (the reference's) and msgpack-numpy bodies (openpi's).

Decoding is strict: arrays may only hold bool, integer or float data (never objects, so never pickle), their
byte count must match dtype and shape, and every field is checked before a request reaches the model.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

MAX_INSTRUCTION_CHARS = 2000
MAX_STATE_SIZE = 4096
MAX_CAMERAS = 16
MAX_ARRAY_DIMS = 8
MAX_ARRAY_SIDE = 2**20  # no image or state side is longer; bigger claims (even of zero-size arrays) are refused
_DTYPE_PATTERN = re.compile(r"^[<>|=]?(b1|\?|[iu][1248]|f[248])$|^(bool|u?int(8|16|32|64)|float(16|32|64))$")


class ProtocolError(Exception):
    """A request the server refuses: ``status`` is the HTTP code, the message says what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple:  # it crosses from the decoding process (``serve/decode.py``)
        return type(self), (self.status, self.message)


# ------------------------------------------------------------------------------------------------ arrays
def checked_dtype(spec: Any) -> np.dtype:
    """A plain bool/int/float dtype from its wire name ("|u1", "<f4", "uint8", ...); others are refused."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", errors="replace")
    if not isinstance(spec, str) or not _DTYPE_PATTERN.match(spec):
        raise ProtocolError(400, f"array dtype {spec!r} is not allowed; use a bool, integer or float dtype "
                                 "such as '|u1' or '<f4'")
    return np.dtype(spec)


def array_from_parts(data: Any, dtype: Any, shape: Any) -> np.ndarray:
    """Rebuild an array from raw bytes, dtype and shape, checking that they agree."""
    dt = checked_dtype(dtype)
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(400, f"array data must be bytes, got {type(data).__name__}")
    if (not isinstance(shape, list | tuple) or len(shape) > MAX_ARRAY_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_ARRAY_SIDE
                       for n in shape)):
        raise ProtocolError(400, f"array shape must be a list of at most {MAX_ARRAY_DIMS} integers in "
                                 f"0..{MAX_ARRAY_SIDE}, got {str(shape)[:200]}")
    expected = math.prod(shape) * dt.itemsize
    if expected != len(data):
        raise ProtocolError(400, f"array of dtype {dt.str} and shape {list(shape)} needs {expected} bytes, "
                                 f"got {len(data)}")
    return np.frombuffer(bytes(data), dtype=dt).reshape(shape)


def _json_array_hook(obj: dict) -> Any:
    """json.loads object hook: a json-numpy ``{"__numpy__": base64, "dtype", "shape"}`` dict -> ndarray."""
    if "__numpy__" not in obj:
        return obj
    text = obj["__numpy__"]
    if not isinstance(text, str):
        raise ProtocolError(400, "json-numpy '__numpy__' must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(400, f"json-numpy '__numpy__' is not valid base64: {err}") from err
    return array_from_parts(data, obj.get("dtype"), obj.get("shape"))


def _msgpack_field(obj: dict, name: str) -> Any:
    return obj[name.encode()] if name.encode() in obj else obj.get(name)


def _msgpack_array_hook(obj: dict) -> Any:
    """msgpack object hook: openpi's ``{b"__ndarray__": True, b"data", b"dtype", b"shape"}`` -> ndarray."""
    if _msgpack_field(obj, "__ndarray__") is True:
        return array_from_parts(_msgpack_field(obj, "data"), _msgpack_field(obj, "dtype"),
                                _msgpack_field(obj, "shape"))
    if _msgpack_field(obj, "__npgeneric__") is True:
        value = _msgpack_field(obj, "data")
        if not isinstance(value, bool | int | float):
            raise ProtocolError(400, "numpy scalar data must be a number")
        try:
            return checked_dtype(_msgpack_field(obj, "dtype")).type(value)
        except OverflowError as err:
            raise ProtocolError(400, f"numpy scalar out of range: {err}") from err
    return obj


def _msgpack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cannot send arrays of dtype {obj.dtype}")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send objects of type {type(obj).__name__}")


def pack(obj: Any) -> bytes:
    """msgpack-numpy encoding (openpi's layout): arrays travel as raw bytes with dtype and shape."""
    return msgpack.packb(obj, default=_msgpack_default, use_bin_type=True)


def unpack(body: bytes) -> Any:
    """Decode a msgpack-numpy body; anything malformed is a ProtocolError(400)."""
    try:
        return msgpack.unpackb(body, raw=False, object_hook=_msgpack_array_hook)
    except ProtocolError:
        raise
    except Exception as err:  # msgpack raises many types: ExtraData, FormatError, StackError, ValueError, ...
        raise ProtocolError(400, f"body is not valid msgpack: {type(err).__name__}: {err}") from err


def _loads_json(text: str | bytes) -> Any:
    try:
        return json.loads(text, object_hook=_json_array_hook)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(400, f"body is not valid JSON: {err}") from err


def decode_json(body: bytes) -> tuple[Any, bool]:
    """A json-numpy body -> (payload, double_encoded); ``{"encoded": "<json>"}`` is the reference's
    double-encoded form for clients without json-numpy."""
    payload = _loads_json(body)
    if not (isinstance(payload, dict) and "encoded" in payload):
        return payload, False
    if len(payload) != 1 or not isinstance(payload["encoded"], str):
        raise ProtocolError(422, "a double-encoded body must be exactly {\"encoded\": \"<json string>\"}")
    return _loads_json(payload["encoded"]), True


# ---------------------------------------------------------------------------------------------- requests
@dataclass
class ActRequest:
    """One validated observation: RGB images as uint8 HxWx3, proprio state as float32 [P]."""

    image: np.ndarray | None
    instruction: str
    unnorm_key: str | None = None
    wrist_image: np.ndarray | None = None
    state: np.ndarray | None = None
    images: dict[str, np.ndarray] | None = None  # cameras by name (a model trained on N cameras takes N)

    def observation(self) -> dict[str, Any]:
        """The ``Policy`` observation dict (optional keys only when present)."""
        obs: dict[str, Any] = {"instruction": self.instruction}
        if self.image is not None:
            obs["image"] = self.image
        if self.images:
            obs["images"] = self.images
        if self.wrist_image is not None:
            obs["wrist_image"] = self.wrist_image
        if self.state is not None:
            obs["state"] = self.state
        return obs


def describe(value: Any) -> str:
    """A short description of what a client sent, for error messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def check_image(value: Any, name: str) -> np.ndarray:
    """uint8 HxWx3 (also HxW grey or HxWx4 RGBA, as PIL's convert("RGB") accepts) -> uint8 HxWx3."""
    if isinstance(value, list):  # clients without numpy may send nested lists of 0..255
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError, RecursionError) as err:
            raise ProtocolError(422, f"'{name}' must be a uint8 HxWx3 array; the list is ragged") from err
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ProtocolError(422, f"'{name}' as a nested list must hold integers 0..255")
        value = arr.astype(np.uint8)
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8:
        raise ProtocolError(422, f"'{name}' must be a uint8 array of shape HxWx3, got {describe(value)}")
    if value.ndim not in (2, 3) or value.size == 0:
        raise ProtocolError(422, f"'{name}' must be a uint8 array of shape HxWx3 (H, W >= 1), got "
                                 f"{describe(value)}")
    if value.ndim == 2:
        value = np.repeat(value[:, :, None], 3, axis=2)
    elif value.ndim == 3 and value.shape[2] == 4:
        value = value[:, :, :3]
    if value.ndim != 3 or value.shape[2] != 3 or value.shape[0] < 1 or value.shape[1] < 1:
        raise ProtocolError(422, f"'{name}' must be a uint8 array of shape HxWx3 (H, W >= 1), got "
                                 f"{describe(value)}")
    return np.ascontiguousarray(value)


def check_state(value: Any) -> np.ndarray:
    """A finite 1-D numeric proprio vector -> float32 [P]."""
    if isinstance(value, list):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError, RecursionError) as err:
            raise ProtocolError(422, "'state' must be a flat list or 1-D array of numbers") from err
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" or value.ndim != 1:
        raise ProtocolError(422, f"'state' must be a 1-D array of numbers, got {describe(value)}")
    if not 0 < value.size <= MAX_STATE_SIZE:
        raise ProtocolError(422, f"'state' must hold 1..{MAX_STATE_SIZE} numbers, got {value.size}")
    state = value.astype(np.float32)
    if not np.isfinite(state).all():
        raise ProtocolError(422, "'state' holds NaN or infinite values")
    return state


def parse_request(payload: Any) -> ActRequest:
    """A decoded body -> ActRequest; every problem is a ProtocolError(422) naming the field."""
    if not isinstance(payload, dict):
        raise ProtocolError(422, f"the body must be an object with 'image' and 'instruction', got "
                                 f"{describe(payload)}")
    image = payload.get("image", payload.get("full_image"))  # OFT clients call it full_image
    images = payload.get("images")
    if images is not None and (not isinstance(images, dict) or len(images) > MAX_CAMERAS
                               or not all(isinstance(k, str) for k in images)):
        raise ProtocolError(422, f"'images' must map camera names to uint8 HxWx3 arrays (at most {MAX_CAMERAS}), "
                                 f"got {describe(images)}")
    if image is None and not images:
        raise ProtocolError(422, "missing 'image' (uint8 HxWx3 array), or 'images' by camera name")
    instruction = payload.get("instruction")
    if not isinstance(instruction, str):
        raise ProtocolError(422, f"'instruction' must be a string, got {describe(instruction)}")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise ProtocolError(422, f"'instruction' has {len(instruction)} characters; the limit is "
                                 f"{MAX_INSTRUCTION_CHARS}")
    try:
        instruction.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProtocolError(422, f"'instruction' is not valid text: {err}") from err
    unnorm_key = payload.get("unnorm_key")
    if unnorm_key is not None and not isinstance(unnorm_key, str):
        raise ProtocolError(422, f"'unnorm_key' must be a string, got {describe(unnorm_key)}")
    wrist = payload.get("wrist_image")
    state = payload.get("state", payload.get("proprio"))
    return ActRequest(
        image=None if image is None else check_image(image, "image"),
        images=None if not images else {k: check_image(v, f"images[{k!r}]") for k, v in images.items()},
        instruction=instruction,
        unnorm_key=unnorm_key,
        wrist_image=None if wrist is None else check_image(wrist, "wrist_image"),
        state=None if state is None else check_state(state),
    )


# ----------------------------------------------------------------------------------------------- replies
def json_reply(action: np.ndarray, timing: dict[str, float], batch_size: int, double_encoded: bool) -> bytes:
    """The JSON reply: ``action`` as a (nested) list plus ``server_timing``, laid out so that it is also a
    json-numpy array: a reference client (json_numpy.patch() then ``.json()``) gets the ndarray back, as
    from the reference server. Double-encoded requests get the same object as a JSON string."""
    action = np.ascontiguousarray(action)
    reply = {
        "action": action.tolist(),
        "server_timing": timing,
        "batch_size": batch_size,
        "__numpy__": base64.b64encode(action.tobytes()).decode("ascii"),
        "dtype": action.dtype.str,
        "shape": list(action.shape),
    }
    text = json.dumps(reply)
    return json.dumps(text).encode() if double_encoded else text.encode()


def msgpack_reply(action: np.ndarray, timing: dict[str, float], batch_size: int) -> bytes:
    """The msgpack reply: ``{"action": ndarray, "server_timing": {...}, "batch_size": n}``."""
    return pack({"action": np.asarray(action), "server_timing": timing, "batch_size": batch_size})


def read_reply(payload: Any) -> tuple[np.ndarray, dict[str, float]]:
    """Client side: a decoded reply (JSON or msgpack) -> (action array, server_timing)."""
    if isinstance(payload, str):  # double-encoded
        try:
            payload = json.loads(payload)
        except ValueError as err:
            raise ProtocolError(502, f"the server's reply is not JSON: {err}") from err
    if not isinstance(payload, dict) or "action" not in payload:
        raise ProtocolError(502, f"the server's reply has no 'action': {str(payload)[:200]}")
    return np.asarray(payload["action"], dtype=np.float64), dict(payload.get("server_timing") or {})
