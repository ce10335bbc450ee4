"""A real server on a loopback port, driven with httpx: reference compatibility, msgpack, errors, batching."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import json_numpy
import msgpack
import numpy as np
import pytest
from serve_testutils import EchoPolicy, ServerThread, echo_action

from openvla.serve.protocol import pack, unpack
from openvla.serve.server import ServeSettings, create_app

MSGPACK = {"Content-Type": "application/msgpack"}
JSON = {"Content-Type": "application/json"}


def reference_post(url: str, payload: dict) -> httpx.Response:
    """What the reference's client sends: requests.post(url, json=payload) after json_numpy.patch()."""
    return httpx.post(f"{url}/act", content=json_numpy.dumps(payload), headers=JSON, timeout=60)


def test_health_and_metadata(vla_server):
    assert httpx.get(f"{vla_server.url}/healthz").json()["status"] == "ok"
    meta = httpx.get(f"{vla_server.url}/metadata").json()
    assert meta["model"] == "tiny" and meta["action_dim"] == 7 and meta["chunk_length"] == 1
    assert meta["unnorm_keys"] == ["bridge", "libero"] and meta["image_size"] == 224
    assert meta["inputs"] == ["image", "instruction"] and meta["max_batch_size"] == 8


def test_reference_style_request_matches_in_process_prediction(vla_server, local_vla, images):
    expected = local_vla.predict_action(image=images[0], instruction="open the drawer", unnorm_key="bridge")
    resp = reference_post(vla_server.url, {"image": images[0], "instruction": "open the drawer",
                                           "unnorm_key": "bridge"})
    assert resp.status_code == 200, resp.text
    action = json_numpy.loads(resp.text)  # the reference client's `.json()` after json_numpy.patch()
    assert isinstance(action, np.ndarray) and action.shape == (7,)
    assert np.array_equal(action, expected)
    body = resp.json()  # clients without json-numpy
    assert body["action"] == expected.tolist() and body["batch_size"] >= 1
    assert set(body["server_timing"]) == {"queue_ms", "infer_ms", "total_ms"}

    encoded = json_numpy.dumps({"image": images[0], "instruction": "open the drawer", "unnorm_key": "bridge"})
    resp = httpx.post(f"{vla_server.url}/act", json={"encoded": encoded}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert np.array_equal(json_numpy.loads(resp.json()), expected)  # the reference's double-encoded reply


def test_msgpack_request_and_per_request_unnorm_keys(vla_server, local_vla, images):
    for key in ("bridge", "libero"):
        expected = local_vla.predict_action(image=images[1], instruction="push the button", unnorm_key=key)
        resp = httpx.post(f"{vla_server.url}/act", headers=MSGPACK, timeout=60,
                          content=pack({"image": images[1], "instruction": "push the button",
                                        "unnorm_key": key}))
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/msgpack"
        reply = unpack(resp.content)
        assert np.array_equal(reply["action"], expected) and reply["server_timing"]["infer_ms"] > 0


def test_concurrent_requests_each_get_their_own_answer(vla_server, local_vla, images):
    keys = ["bridge", "libero"] * 4
    expected = [local_vla.predict_action(image=im, instruction="open the drawer", unnorm_key=k)
                for im, k in zip(images, keys, strict=True)]
    assert len({tuple(e) for e in expected}) >= 6  # the answers differ, so a mix-up would show

    def call(i: int) -> tuple[np.ndarray, int]:
        resp = reference_post(vla_server.url, {"image": images[i], "instruction": "open the drawer",
                                               "unnorm_key": keys[i]})
        assert resp.status_code == 200, resp.text
        return json_numpy.loads(resp.text), resp.json()["batch_size"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    for (action, _), want in zip(results, expected, strict=True):
        assert np.array_equal(action, want)


def _json_body(**fields) -> bytes:
    return json_numpy.dumps(fields).encode()


IMG = np.zeros((8, 8, 3), np.uint8)
IMG_JSON = json.loads(json_numpy.dumps(IMG))
HUGE_EMPTY = {"__numpy__": "", "dtype": "|u1", "shape": [2**63 - 1, 0]}
BAD_BODIES = [
    # (body, headers, status, message fragment)
    (b"this is not json", JSON, 400, "not valid JSON"),
    (_json_body(image=IMG, instruction="x")[:-9], JSON, 400, "not valid JSON"),
    (b"[1, 2, 3]", JSON, 422, "must be an object"),
    (b'{"instruction": "open the drawer"}', JSON, 422, "missing 'image'"),
    (_json_body(image=IMG.astype(np.float32), instruction="x", unnorm_key="bridge"), JSON, 422,
     "'image' must be a uint8 array of shape HxWx3, got a float32 array of shape [8, 8, 3]"),
    (_json_body(image=np.zeros((8, 8, 5), np.uint8), instruction="x", unnorm_key="bridge"), JSON, 422,
     "HxWx3"),
    (_json_body(image=IMG, instruction=7, unnorm_key="bridge"), JSON, 422, "'instruction' must be a string"),
    (_json_body(image=IMG, instruction="x", unnorm_key="nope"), JSON, 422,
     "unknown unnorm_key 'nope'; valid keys: ['bridge', 'libero']"),
    (_json_body(image=IMG, instruction="x"), JSON, 422, "pass unnorm_key, one of ['bridge', 'libero']"),
    (json.dumps({"image": {"__numpy__": "AAAA", "dtype": "|O", "shape": [3]}, "instruction": "x"}).encode(),
     JSON, 400, "dtype '|O' is not allowed"),
    (json.dumps({"image": {"__numpy__": "AAAA", "dtype": "|u1", "shape": [4096, 4096, 3]},
                 "instruction": "x"}).encode(), JSON, 400, "needs 50331648 bytes, got 3"),
    (json.dumps({"encoded": 5}).encode(), JSON, 422, "double-encoded"),
    (b"\x92\x01\x02", MSGPACK, 422, "must be an object"),
    (b"\xc1\xc1", MSGPACK, 400, "not valid msgpack"),
    (msgpack.packb({"image": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}}), MSGPACK,
     400, "not allowed"),
    (b"x" * (2 * 2**20), JSON, 413, "over the 1048576-byte limit"),
    # zero-size arrays that claim absurd shapes (np.repeat of one raised "array is too big": a plain-text 500)
    (json.dumps({"image": HUGE_EMPTY, "instruction": "x"}).encode(), JSON, 400, "integers in 0..1048576"),
    (json.dumps({"image": IMG_JSON, "wrist_image": HUGE_EMPTY, "instruction": "x"}).encode(), JSON, 400,
     "integers in 0..1048576"),
    (msgpack.packb({"image": {b"__ndarray__": True, b"data": b"", b"dtype": "|u1", b"shape": [2**63 - 1, 0]},
                    "instruction": "x"}), MSGPACK, 400, "integers in 0..1048576"),
    (json.dumps({"image": {**HUGE_EMPTY, "shape": [2**20, 0]}, "instruction": "x"}).encode(), JSON, 422,
     "'image' must be a uint8 array of shape HxWx3 (H, W >= 1), got a uint8 array of shape [1048576, 0]"),
]


@pytest.mark.parametrize("body, headers, status, fragment", BAD_BODIES,
                         ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD_BODIES)])
def test_bad_requests_get_their_status_and_message(vla_server, body, headers, status, fragment):
    resp = httpx.post(f"{vla_server.url}/act", content=body, headers=headers, timeout=30)
    assert resp.status_code == status, resp.text
    assert resp.json()["status"] == status
    assert fragment in resp.json()["error"], resp.json()["error"]


def test_oversized_chunked_body_without_length_is_413(vla_server):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    resp = httpx.post(f"{vla_server.url}/act", content=chunks(), headers=JSON, timeout=30)
    assert resp.status_code == 413 and "limit" in resp.json()["error"]


def test_unknown_routes_and_methods_are_json_errors(vla_server):
    assert httpx.get(f"{vla_server.url}/nope").json() == {"error": "Not Found", "status": 404}
    assert httpx.get(f"{vla_server.url}/act").status_code == 405
    assert httpx.get(f"{vla_server.url}/docs").status_code == 404  # no API browser on a robot server


def test_server_still_answers_after_bad_requests(vla_server, local_vla, images):
    for body, headers, *_ in BAD_BODIES:
        httpx.post(f"{vla_server.url}/act", content=body, headers=headers, timeout=30)
    assert httpx.get(f"{vla_server.url}/healthz").status_code == 200
    resp = reference_post(vla_server.url, {"image": images[2], "instruction": "open the drawer",
                                           "unnorm_key": "libero"})
    expected = local_vla.predict_action(image=images[2], instruction="open the drawer", unnorm_key="libero")
    assert resp.status_code == 200 and np.array_equal(json_numpy.loads(resp.text), expected)


# --------------------------------------------------------------------- servers around a fast, fake policy
def echo_post(url: str, image: np.ndarray, instruction: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/act", content=pack({"image": image, "instruction": instruction}),
                      headers={**MSGPACK, **(headers or {})}, timeout=30)


def test_api_key_is_required_when_configured():
    settings = ServeSettings(api_key="s3cret")
    with ServerThread(create_app(EchoPolicy(), settings)) as server:
        server.wait_ready()
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # liveness needs no key
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cre"}):
            resp = echo_post(server.url, IMG, "x", headers=headers)
            assert resp.status_code == 401 and "API key" in resp.json()["error"]
            assert httpx.get(f"{server.url}/metadata", headers=headers).status_code == 401
        for headers in ({"Authorization": "Bearer s3cret"}, {"Authorization": "Api-Key s3cret"},
                        {"X-API-Key": "s3cret"}):
            assert echo_post(server.url, IMG, "x", headers=headers).status_code == 200


def test_503_while_loading_then_ready():
    release = threading.Event()

    def slow_loader() -> EchoPolicy:
        release.wait(30)
        return EchoPolicy()

    with ServerThread(create_app(slow_loader)) as server:
        health = httpx.get(f"{server.url}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        resp = echo_post(server.url, IMG, "x")
        assert resp.status_code == 503 and "loading" in resp.json()["error"] and resp.headers["retry-after"]
        assert httpx.get(f"{server.url}/metadata").status_code == 503
        release.set()
        server.wait_ready(10)
        assert echo_post(server.url, IMG, "x").status_code == 200


def test_load_failure_is_reported(tmp_path):
    with ServerThread(create_app(tmp_path / "missing")) as server:
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{server.url}/healthz")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status_code == 503 and "does not exist" in health.json()["error"]
        resp = echo_post(server.url, IMG, "x")
        assert resp.status_code == 503 and "failed to load" in resp.json()["error"]


def test_503_when_the_queue_is_full():
    gate = threading.Event()
    policy = EchoPolicy(gate=gate)
    app = create_app(policy, ServeSettings(max_batch_size=1, batch_window_ms=0, max_queue=1))
    with ServerThread(app) as server, ThreadPoolExecutor(2) as pool:
        server.wait_ready()
        first = pool.submit(echo_post, server.url, IMG, "first")
        assert policy.entered.wait(10)  # the worker is busy with the first request
        second = pool.submit(echo_post, server.url, IMG, "second")
        deadline = time.monotonic() + 10
        while app.state.serve.batcher.pending() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        resp = echo_post(server.url, IMG, "third")
        assert resp.status_code == 503 and "busy" in resp.json()["error"]
        gate.set()
        assert first.result(10).status_code == 200 and second.result(10).status_code == 200


def test_inference_error_is_500_for_that_request_only():
    policy = EchoPolicy(delay=0.05)
    app = create_app(policy, ServeSettings(batch_window_ms=50))
    with ServerThread(app) as server, ThreadPoolExecutor(4) as pool:
        server.wait_ready()
        texts = ["a", "explode", "abc", "abcd"]
        responses = list(pool.map(lambda t: echo_post(server.url, IMG, t), texts))
        assert responses[1].status_code == 500
        assert responses[1].json()["error"] == "inference failed: RuntimeError: boom"
        for resp, text in zip(responses, texts, strict=True):
            if text != "explode":
                assert resp.status_code == 200 and unpack(resp.content)["action"][-1] == len(text)
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_dynamic_batching_never_mixes_answers():
    policy = EchoPolicy(delay=0.01)
    with ServerThread(create_app(policy, ServeSettings(max_batch_size=8, batch_window_ms=5))) as server:
        server.wait_ready()

        def client(c: int) -> list[bool]:
            rng = np.random.default_rng(c)
            ok = []
            with httpx.Client(timeout=30) as http:
                for i in range(10):
                    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
                    text = "x" * (c * 10 + i)
                    resp = http.post(f"{server.url}/act", headers=MSGPACK,
                                     content=pack({"image": image, "instruction": text}))
                    ok.append(resp.status_code == 200 and np.array_equal(
                        unpack(resp.content)["action"], echo_action(image, text)[0]))
            return ok

        with ThreadPoolExecutor(16) as pool:
            results = [ok for oks in pool.map(client, range(16)) for ok in oks]
    assert len(results) == 160 and all(results)
    assert sum(policy.batch_sizes) == 160 and max(policy.batch_sizes) > 1


def test_504_when_no_answer_in_time():
    gate = threading.Event()
    with ServerThread(create_app(EchoPolicy(gate=gate), ServeSettings(request_timeout_s=0.2))) as server:
        server.wait_ready()
        resp = echo_post(server.url, IMG, "x")
        assert resp.status_code == 504 and "no answer within 0.2 s" in resp.json()["error"]
        gate.set()
        assert echo_post(server.url, IMG, "x").status_code == 200
