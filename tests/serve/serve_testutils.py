"""Helpers for the serving tests: a uvicorn server in a thread, and a fast policy that echoes its input."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np

from openvla.serve.server import uvicorn_server

NORM_STATS = {
    "bridge": {"action": {"q01": [-0.1] * 6 + [0.0], "q99": [0.1] * 6 + [1.0], "mask": [True] * 6 + [False]}},
    "libero": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}},
}


class ServerThread:
    """A uvicorn server for ``app`` on a pre-bound 127.0.0.1 socket, stopped on exit."""

    def __init__(self, app) -> None:
        self.app = app
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (with proto 0 it does not,
        # and every reply then waits ~40 ms for a delayed ACK).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn_server(app, log_level="warning")  # the server `openvla serve` runs
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.05)


class EchoPolicy:
    """A fast Policy whose action is a function of its own input, so any mix-up shows: [mean R, G, B, len]."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def reset(self) -> None:
        pass

    def act(self, observation: dict) -> np.ndarray:
        return self.act_batch([observation])[0]

    def act_batch(self, observations: list[dict]) -> list[np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.batch_sizes.append(len(observations))
        time.sleep(self.delay)
        if any(o["instruction"] == "explode" for o in observations):
            raise RuntimeError("boom")
        return [echo_action(o["image"], o["instruction"]) for o in observations]


def echo_action(image: np.ndarray, instruction: str) -> np.ndarray:
    """What EchoPolicy answers for this input: a [1, 4] chunk."""
    return np.array([[*image.reshape(-1, 3).mean(0), len(instruction)]], dtype=np.float32)
