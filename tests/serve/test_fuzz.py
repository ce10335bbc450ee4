"""Fuzzing `POST /act`: random JSON and msgpack, truncated and garbled bodies, huge arrays, wrong types.

The server must answer every one (no hang) with 200, or with a 4xx and a JSON message (never 500), and then
still answer /healthz and a valid request correctly.
"""

from __future__ import annotations

import base64
import json
import random

import httpx
import json_numpy
import msgpack
import numpy as np

from openvla.serve.protocol import pack

JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}
FIELDS = ["image", "instruction", "unnorm_key", "state", "wrist_image", "encoded", "full_image", "__numpy__",
          "dtype", "shape", "__ndarray__"]
DTYPES = ["|u1", "<f4", "|O", "<U4", "i8", "[('a','<i4')]", "uint8", "", None, 3, "|b1", ">f8"]


def random_value(rng: random.Random, depth: int = 0):
    """A random JSON-able value, sometimes shaped like a json-numpy array."""
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.randint(-2**70, 2**70)
    if kind == 1:
        return rng.choice([0.5, -1e308, float("inf"), float("nan"), 1e-300])
    if kind == 2:
        return "".join(rng.choice("ab\u00e9\u4e2d\x00\"\\ \ud800") for _ in range(rng.randrange(20)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        shape = [rng.randrange(-1, 5) for _ in range(rng.randrange(5))] if rng.random() < 0.8 else "x"
        data = base64.b64encode(bytes(rng.randrange(256) for _ in range(rng.randrange(64)))).decode()
        return {"__numpy__": data if rng.random() < 0.9 else data[:-1] + "!", "dtype": rng.choice(DTYPES),
                "shape": shape}
    if kind in (5, 6):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def valid_payload(rng: random.Random) -> dict:
    image = np.frombuffer(rng.randbytes(12 * 10 * 3), np.uint8).reshape(12, 10, 3)
    return {"image": image, "instruction": "open the drawer", "unnorm_key": "bridge"}


def fuzz_bodies(seed: int = 0) -> list[tuple[bytes, dict]]:
    rng = random.Random(seed)
    bodies: list[tuple[bytes, dict]] = []
    for _ in range(120):  # random structures, as JSON and as msgpack
        value = random_value(rng)
        bodies.append((json.dumps(value).encode(), JSON))
        try:
            bodies.append((msgpack.packb(value), MSGPACK))
        except (OverflowError, ValueError):
            pass
    for _ in range(60):  # truncated valid bodies, all three forms
        payload = valid_payload(rng)
        text = json_numpy.dumps(payload).encode()
        for body, headers in ((text, JSON), (json.dumps({"encoded": text.decode()}).encode(), JSON),
                              (pack(payload), MSGPACK)):
            bodies.append((body[:rng.randrange(len(body))], headers))
    for _ in range(30):  # garbled valid bodies: a few bytes overwritten
        payload = valid_payload(rng)
        body = bytearray(pack(payload) if rng.random() < 0.5 else json_numpy.dumps(payload).encode())
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        bodies.append((bytes(body), rng.choice([JSON, MSGPACK])))
    for _ in range(30):  # raw noise, any content type
        headers = rng.choice([JSON, MSGPACK, {"Content-Type": "text/plain"}])
        bodies.append((rng.randbytes(rng.randrange(200)), headers))
    image = np.zeros((4, 4, 3), np.uint8)
    for field in ("image", "instruction", "unnorm_key", "state", "wrist_image"):  # wrong types per field
        for wrong in (1, 2.5, "s", [], {}, None, [[1]], np.float64(3), np.zeros(3, np.int16), True):
            payload = {"image": image, "instruction": "x", "unnorm_key": "bridge", field: wrong}
            bodies.append((json_numpy.dumps(payload).encode(), JSON))
    huge = {"image": {"__numpy__": "AAAA", "dtype": "|u1", "shape": [2**31, 2**31, 3]}, "instruction": "x"}
    bodies += [
        (json.dumps(huge).encode(), JSON),
        (b"[" * 200_000, JSON),  # nesting deeper than any parser allows
        (b"\x91" * 200_000, MSGPACK),
        (json.dumps({"image": [[[0, 0, 0]] * 300] * 300, "instruction": "x",
                     "unnorm_key": "bridge"}).encode(), JSON),  # a big nested-list image
        (pack({"image": np.zeros((600, 600, 3), np.uint8), "instruction": "x"}), MSGPACK),  # over 1 MiB: 413
        (json.dumps({"instruction": "x" * 900_000, "image": 1}).encode(), JSON),
    ]
    return bodies


def test_fuzzed_bodies_never_crash_or_hang_the_server(vla_server, local_vla):
    bodies = fuzz_bodies()
    assert len(bodies) > 400
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=vla_server.url, timeout=30) as http:
        for body, headers in bodies:
            resp = http.post("/act", content=body, headers=headers)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            assert resp.status_code in (200, 400, 413, 422), (resp.status_code, resp.text, body[:200])
            if resp.status_code != 200:
                assert resp.json()["error"], resp.text
        assert statuses.get(400, 0) > 50 and statuses.get(422, 0) > 50  # the fuzz reached both layers
        assert http.get("/healthz").json()["status"] == "ok"
        image = np.full((16, 16, 3), 99, np.uint8)
        resp = http.post("/act", content=json_numpy.dumps({"image": image, "instruction": "push the button",
                                                          "unnorm_key": "libero"}), headers=JSON)
    expected = local_vla.predict_action(image=image, instruction="push the button", unnorm_key="libero")
    assert resp.status_code == 200 and np.array_equal(json_numpy.loads(resp.text), expected)
