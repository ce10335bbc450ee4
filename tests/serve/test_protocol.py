"""Body decoding and validation: json-numpy (as the reference's clients send it) and msgpack-numpy."""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager

import json_numpy
import msgpack
import numpy as np
import pytest

from openvla.serve.protocol import (
    ProtocolError,
    decode_json,
    json_reply,
    msgpack_reply,
    pack,
    parse_request,
    read_reply,
    unpack,
)

IMAGE = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


@contextmanager
def raises(status: int, fragment: str):
    """The block must raise ProtocolError with this status and a message containing ``fragment``."""
    with pytest.raises(ProtocolError) as info:
        yield
    assert info.value.status == status, info.value.message
    assert fragment in info.value.message, info.value.message


def test_reference_json_numpy_body_decodes_to_the_same_arrays():
    body = json_numpy.dumps({"image": IMAGE, "instruction": "open the drawer", "unnorm_key": "bridge",
                             "state": np.array([0.5, -1.0], np.float64)}).encode()
    payload, double = decode_json(body)
    req = parse_request(payload)
    assert not double and req.unnorm_key == "bridge" and req.instruction == "open the drawer"
    assert req.image.dtype == np.uint8 and np.array_equal(req.image, IMAGE)
    assert req.state.dtype == np.float32 and req.state.tolist() == [0.5, -1.0]


def test_double_encoded_body():
    inner = json_numpy.dumps({"image": IMAGE, "instruction": "x"})
    payload, double = decode_json(json.dumps({"encoded": inner}).encode())
    assert double and np.array_equal(parse_request(payload).image, IMAGE)
    with raises(422, "exactly"):
        decode_json(json.dumps({"encoded": inner, "instruction": "x"}).encode())


@pytest.mark.parametrize("dtype", ["|O", "O", "<U3", "|V4", "[('a', '<i4')]", "(2,)i4", "<c16", "M8", 7,
                                   None])
def test_only_plain_numeric_dtypes_are_decoded(dtype):
    body = json.dumps({"image": {"__numpy__": base64.b64encode(b"\0" * 8).decode(), "dtype": dtype,
                                 "shape": [1]}}).encode()
    with raises(400, "not allowed"):
        decode_json(body)


@pytest.mark.parametrize("array, fragment", [
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [100000, 100000, 3]}, "needs 30000000000 bytes"),
    ({"__numpy__": "AA=A", "dtype": "|u1", "shape": [1]}, "base64"),
    ({"__numpy__": 5, "dtype": "|u1", "shape": [1]}, "base64 string"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [-3]}, "shape"),
    ({"__numpy__": "AAAA", "dtype": "|u1", "shape": "3"}, "shape"),
])
def test_inconsistent_arrays_are_refused(array, fragment):
    with raises(400, fragment):
        decode_json(json.dumps({"image": array}).encode())


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_json_is_400(body):
    with raises(400, "not valid JSON"):
        decode_json(body)


def test_msgpack_numpy_round_trip_and_openpi_layout():
    body = pack({"image": IMAGE, "instruction": "x", "state": np.float32([1, 2])})
    raw = msgpack.unpackb(body, raw=False)
    assert raw["image"][b"__ndarray__"] is True and raw["image"][b"dtype"] == "|u1"
    req = parse_request(unpack(body))
    assert np.array_equal(req.image, IMAGE) and req.state.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("body, fragment", [
    (pack({"image": IMAGE})[:-7], "not valid msgpack"),
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb({"image": {b"__ndarray__": True, b"data": b"x", b"dtype": "|O", b"shape": [1]}}),
     "not allowed"),
    (msgpack.packb({"image": {b"__ndarray__": True, b"data": b"xy", b"dtype": "|u1", b"shape": [3]}}),
     "needs 3"),
    (msgpack.packb({1: 2}), "not valid msgpack"),
])
def test_malformed_msgpack_is_400(body, fragment):
    with raises(400, fragment):
        unpack(body)


@pytest.mark.parametrize("payload, fragment", [
    ([1, 2], "must be an object"),
    ({"instruction": "x"}, "missing 'image'"),
    ({"image": IMAGE.astype(np.float32), "instruction": "x"}, "got a float32 array of shape [4, 5, 3]"),
    ({"image": np.zeros((4, 5, 5), np.uint8), "instruction": "x"}, "HxWx3"),
    ({"image": np.zeros((0, 5, 3), np.uint8), "instruction": "x"}, "H, W >= 1"),
    ({"image": np.zeros(5, np.uint8), "instruction": "x"}, "HxWx3"),
    ({"image": "abc", "instruction": "x"}, "got a str"),
    ({"image": [[1, 2], [3]], "instruction": "x"}, "ragged"),
    ({"image": [[[300, 0, 0]]], "instruction": "x"}, "0..255"),
    ({"image": IMAGE}, "'instruction' must be a string"),
    ({"image": IMAGE, "instruction": 3}, "'instruction' must be a string, got a int"),
    ({"image": IMAGE, "instruction": "x" * 5000}, "limit"),
    ({"image": IMAGE, "instruction": "lone \ud800 surrogate"}, "not valid text"),
    ({"image": IMAGE, "instruction": "x", "unnorm_key": 1}, "'unnorm_key' must be a string"),
    ({"image": IMAGE, "instruction": "x", "wrist_image": np.zeros((2, 2), np.int64)}, "'wrist_image'"),
    ({"image": IMAGE, "instruction": "x", "state": [1, "a"]}, "'state'"),
    ({"image": IMAGE, "instruction": "x", "state": [1.0, float("nan")]}, "NaN"),
    ({"image": IMAGE, "instruction": "x", "state": np.zeros((2, 2))}, "1-D"),
])
def test_invalid_fields_are_422_and_named(payload, fragment):
    with raises(422, fragment):
        parse_request(payload)


def test_lenient_image_forms_the_reference_accepted():
    grey = parse_request({"image": IMAGE[..., 0], "instruction": "x"}).image
    rgba = parse_request({"image": np.concatenate([IMAGE, IMAGE[..., :1]], axis=2), "instruction": "x"}).image
    listed = parse_request({"full_image": IMAGE.tolist(), "instruction": "x"}).image
    assert grey.shape == (4, 5, 3) and np.array_equal(grey[..., 2], IMAGE[..., 0])
    assert np.array_equal(rgba, IMAGE) and np.array_equal(listed, IMAGE)


@pytest.mark.parametrize("action", [np.linspace(-1, 1, 7), np.arange(12, dtype=np.float32).reshape(4, 3)])
def test_reply_is_a_list_for_everyone_and_an_ndarray_for_json_numpy_clients(action):
    timing = {"infer_ms": 1.5}
    for double in (False, True):
        text = json_reply(action, timing, 3, double).decode()
        plain = json.loads(text)
        if double:
            plain = json.loads(plain)
            assert np.array_equal(json_numpy.loads(json.loads(text)), action)  # reference, double-encoded
        else:
            assert np.array_equal(json_numpy.loads(text), action)  # reference client after json_numpy.patch()
        assert plain["action"] == action.tolist() and plain["server_timing"] == timing
        assert plain["batch_size"] == 3
        got, got_timing = read_reply(json.loads(text))
        assert np.array_equal(got, action) and got_timing == timing
    got, _ = read_reply(unpack(msgpack_reply(action, timing, 1)))
    assert np.array_equal(got, action)
