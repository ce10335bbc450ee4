"""What a request may cost the server: bodies decoded off the event loop, ignored fields dropped before the
request waits, a bound on the memory requests in flight hold, slow bodies timed out, instructions capped in tokens."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from serve_testutils import EchoPolicy, ServerThread

from openvla.serve.protocol import pack
from openvla.serve.server import ServeSettings, create_app

MSGPACK = {"Content-Type": "application/msgpack"}
IMG = np.zeros((8, 8, 3), np.uint8)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_bodies_are_decoded_off_the_event_loop(monkeypatch):
    import openvla.serve.decode as decode_module

    real = decode_module.parse_request

    def slow_parse(payload):
        time.sleep(1.0)  # a decode that takes a second (a 15 MB nested-list image takes 2-3 s)
        return real(payload)

    monkeypatch.setattr(decode_module, "parse_request", slow_parse)
    with ServerThread(create_app(EchoPolicy())) as server, ThreadPoolExecutor(1) as pool:
        server.wait_ready()
        posted = pool.submit(httpx.post, f"{server.url}/act", content=pack({"image": IMG, "instruction": "x"}),
                             headers=MSGPACK, timeout=30)
        time.sleep(0.2)
        start = time.perf_counter()
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        health_s = time.perf_counter() - start
        assert posted.result(30).status_code == 200
    assert health_s < 0.5, f"/healthz waited {health_s:.2f} s for a body being decoded"


def test_a_large_nested_list_image_does_not_stall_the_server():
    """json's C parser holds the GIL for a whole body (~1 s for this one): large bodies decode in a child process."""
    row = np.arange(1000 * 3).reshape(1000, 3) % 251
    image = np.broadcast_to(row, (1000, 1000, 3))
    row_text = json.dumps(row.tolist())
    body = ('{"image": [' + ",".join([row_text] * 1000) + '], "instruction": "x"}').encode()  # 14 MB
    settings = ServeSettings(max_body_mb=16)
    with ServerThread(create_app(EchoPolicy(), settings)) as server, ThreadPoolExecutor(1) as pool:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            posted = pool.submit(http.post, "/act", content=body, headers={"Content-Type": "application/json"})
            worst = 0.0
            while not posted.done():
                start = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                worst = max(worst, time.perf_counter() - start)
                time.sleep(0.01)
            resp = posted.result()
    assert resp.status_code == 200, resp.text
    assert np.allclose(json.loads(resp.content)["action"], [*image.reshape(-1, 3).mean(0), 1], atol=1e-3)
    assert worst < 0.4, f"/healthz waited {worst:.2f} s while a large body was decoded"


def test_ignored_fields_are_dropped_before_the_request_waits():
    gate = threading.Event()
    policy = EchoPolicy(gate=gate)
    app = create_app(policy, ServeSettings(max_batch_size=1, batch_window_ms=0))
    junk = {"image": IMG.tolist(), "instruction": "x", "junk": [[] for _ in range(200_000)]}  # gc-tracked
    with ServerThread(app) as server, ThreadPoolExecutor(2) as pool:
        server.wait_ready()
        first = pool.submit(httpx.post, f"{server.url}/act", content=pack({"image": IMG, "instruction": "a"}),
                            headers=MSGPACK, timeout=30)
        assert policy.entered.wait(10)  # the worker is busy: the next request waits in the queue
        gc.collect()
        before = len(gc.get_objects())
        second = pool.submit(httpx.post, f"{server.url}/act", content=json.dumps(junk).encode(),
                             headers={"Content-Type": "application/json"}, timeout=30)
        wait_until(lambda: app.state.serve.batcher.pending() == 1)
        gc.collect()
        held = len(gc.get_objects()) - before
        gate.set()
        assert first.result(10).status_code == 200 and second.result(10).status_code == 200
    assert held < 20_000, f"{held} objects held while the request waited (the junk has 200,000)"


def test_memory_held_by_requests_in_flight_is_bounded():
    settings = ServeSettings(max_body_mb=1.0, max_queued_mb=1.0, body_timeout_s=5)
    app = create_app(EchoPolicy(), settings)
    with ServerThread(app) as server:
        server.wait_ready()
        assert httpx.get(f"{server.url}/metadata").json()["max_queued_mb"] == 1.0
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:  # declares 700 kB, sends 10 bytes
            slow.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                         b"Content-Length: 700000\r\n\r\n" + b"\x00" * 10)
            wait_until(lambda: app.state.serve.budget.held >= 700_000)
            body = pack({"image": np.zeros((200, 1000, 3), np.uint8), "instruction": "x"})  # 600 kB
            resp = httpx.post(f"{server.url}/act", content=body, headers=MSGPACK, timeout=30)
            assert resp.status_code == 503 and resp.headers["retry-after"]
            assert "--max-queued-mb" in resp.json()["error"], resp.text
        wait_until(lambda: app.state.serve.budget.held == 0)  # the slow request gave its share back
        assert httpx.post(f"{server.url}/act", content=body, headers=MSGPACK, timeout=30).status_code == 200


def test_a_body_that_does_not_arrive_is_timed_out():
    with ServerThread(create_app(EchoPolicy(), ServeSettings(body_timeout_s=0.5))) as server:
        server.wait_ready()
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"{" * 10)
            start = time.monotonic()
            reply = b""
            while chunk := sock.recv(65536):  # the server answers, then closes the connection
                reply += chunk
            waited = time.monotonic() - start
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), reply
        assert b"application/json" in head.lower() and b"connection: close" in head.lower()
        assert json.loads(body) == {"status": 408, "error": "the body did not arrive within 0.5 s "
                                                            "(got 10 bytes of 1000; --body-timeout)"}
        assert waited < 3
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_instruction_tokens_are_capped_by_the_models_context(vla_server, local_vla):
    meta = httpx.get(f"{vla_server.url}/metadata").json()
    cfg = local_vla.config
    template = len(local_vla.processor.tokenize(""))
    assert meta["max_instruction_chars"] == 2000
    assert meta["max_instruction_tokens"] == (cfg.llm["max_position_embeddings"] - cfg.num_prefix_tokens
                                              - template - 1 - cfg.action_slots)
    emoji = "\U0001f600" * 2000  # 2000 characters (the character cap lets it in), 8000 tokens
    resp = httpx.post(f"{vla_server.url}/act", timeout=30, headers=MSGPACK,
                      content=pack({"image": IMG, "instruction": emoji, "unnorm_key": "bridge"}))
    assert resp.status_code == 422, resp.text
    tokens = len(local_vla.processor.tokenize(emoji)) - template
    assert resp.json()["error"] == (f"'instruction' is {tokens} tokens; this model takes at most "
                                    f"{meta['max_instruction_tokens']} (its context minus the image, prompt "
                                    "and action tokens)")
    ok = httpx.post(f"{vla_server.url}/act", timeout=30, headers=MSGPACK,
                    content=pack({"image": IMG, "instruction": "open the drawer " * 20, "unnorm_key": "bridge"}))
    assert ok.status_code == 200, ok.text


def test_a_policy_without_tokenizer_keeps_the_character_cap():
    with ServerThread(create_app(EchoPolicy())) as server:
        server.wait_ready()
        assert httpx.get(f"{server.url}/metadata").json()["max_instruction_tokens"] is None
        for text, status in (("\U0001f600" * 2000, 200), ("x" * 2001, 422)):
            resp = httpx.post(f"{server.url}/act", content=pack({"image": IMG, "instruction": text}),
                              headers=MSGPACK, timeout=30)
            assert resp.status_code == status, resp.text
