"""Start and stop: "loading" until the warm-up prediction answers, a request timeout derived from it, a load
failure that exits 1 with one line, and a SIGTERM that answers every accepted request and exits 0."""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from serve_testutils import EchoPolicy, ServerThread

from openvla.serve.protocol import pack, unpack
from openvla.serve.server import ServeSettings, create_app, derive_request_timeout

HERE = Path(__file__).parent
MSGPACK = {"Content-Type": "application/msgpack"}


class SlowStart(EchoPolicy):
    """A policy whose warm-up takes ``warm_up_s`` after ``release`` is set."""

    def __init__(self, warm_up_s: float, release: threading.Event | None = None) -> None:
        super().__init__()
        self.warm_up_s = warm_up_s
        self.release = release or threading.Event()
        if release is None:
            self.release.set()

    def warm_up(self) -> None:
        assert self.release.wait(30)
        time.sleep(self.warm_up_s)


def test_loading_until_the_warm_up_answers_then_a_timeout_that_fits_the_model():
    release = threading.Event()
    app = create_app(SlowStart(0.5, release), ServeSettings(max_batch_size=64))
    with ServerThread(app) as server:
        time.sleep(0.2)  # the policy is built; its warm-up has not answered
        health = httpx.get(f"{server.url}/healthz")
        assert health.status_code == 503 and health.json() == {"status": "loading"}
        assert httpx.post(f"{server.url}/act", content=b"{}").status_code == 503
        release.set()
        server.wait_ready(10)
        meta = httpx.get(f"{server.url}/metadata").json()
    assert 0.5 <= meta["warm_up_s"] < 5
    # two batches of 64 rows, each row as slow as the warm-up: over the 60 s default
    assert meta["request_timeout_s"] >= 64
    assert abs(meta["request_timeout_s"] - derive_request_timeout(meta["warm_up_s"], 64)) <= 0.2  # rounding


def test_derived_timeout_keeps_the_default_for_fast_models():
    assert derive_request_timeout(0.05, 8) == 60.0
    assert derive_request_timeout(50.0, 8) == 800.0  # openvla-7b on a CPU: ~50 s a prediction


def test_a_request_timeout_shorter_than_the_model_is_called_out(caplog):
    caplog.set_level(logging.WARNING, logger="openvla.serve")
    with ServerThread(create_app(SlowStart(0.3), ServeSettings(request_timeout_s=0.2))) as server:
        server.wait_ready()
        meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["request_timeout_s"] == 0.2  # the user's choice stands
    assert any("--request-timeout 0.2 s is shorter than two predictions" in r.message for r in caplog.records)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_in_subprocess(code: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nPORT = {port}\n" + code
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)


SIGTERM_SERVER = """
from serve_testutils import EchoPolicy
from openvla.serve.server import ServeSettings, run
settings = ServeSettings(max_batch_size=1, batch_window_ms=0, shutdown_drain_s=0.5)
sys.exit(run(EchoPolicy(delay=0.3), settings, port=PORT, log_level="warning"))
"""


def test_sigterm_answers_every_accepted_request_and_exits_0():
    proc, url = serve_in_subprocess(SIGTERM_SERVER)
    try:
        wait_for(url, proc)
        image = np.zeros((4, 4, 3), np.uint8)
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(httpx.post, f"{url}/act", content=pack({"image": image, "instruction": "x"}),
                                   headers=MSGPACK, timeout=30) for _ in range(12)]
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/healthz").json()["queued"] < 8:  # 0.3 s each, one at a time: 3.6 s
                assert time.monotonic() < deadline
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = [r.status_code for r in responses]
    assert rc == 0, proc.stderr.read()
    assert set(statuses) == {200, 503}, statuses  # the drain ran some; the rest were told, none dropped
    for resp in responses:
        if resp.status_code == 200:
            assert unpack(resp.content)["action"].shape == (4,)
        else:
            assert resp.json() == {"error": "the server is shutting down", "status": 503}


LOAD_FAILS = """
import pathlib, time
from openvla.serve.server import run

class Weights:  # stands for a model whose memory takes a while to give back (a 7B model's tensors)
    def __del__(self):
        time.sleep(0.5)
        pathlib.Path(MARKER).write_text("freed")

def load():
    weights = Weights()
    raise RuntimeError("shard 2 of 3 is truncated")

sys.exit(run(load, port=PORT, log_level="warning"))
"""


def test_a_load_failure_exits_1_with_one_line_after_releasing_the_model(tmp_path):
    marker = tmp_path / "freed"
    proc, _ = serve_in_subprocess(f"MARKER = {str(marker)!r}\n" + LOAD_FAILS)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if "ERROR" in line] == [
        line for line in stderr.splitlines() if "model failed to load: RuntimeError: shard 2 of 3 is truncated" in line]
    # the loader thread let go of the model before the process exited: a thread still freeing torch
    # tensors at interpreter exit is killed mid-way (openvla-7b: abort, exit 134)
    assert marker.read_text() == "freed"


def test_openvla_serve_exits_1_on_a_broken_checkpoint(served_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(served_checkpoint, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = subprocess.run([sys.executable, "-m", "openvla.cli", "serve", "--checkpoint", str(broken),
                           "--port", str(free_port()), "--log-level", "warning"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "model failed to load" in errors[0] and weights.name in errors[0], proc.stderr
