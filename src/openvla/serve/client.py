"""`Client(url)`: the ``Policy`` protocol over HTTP, talking to `openvla serve` (msgpack-numpy by default)."""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from openvla.serve.protocol import pack, read_reply, unpack

API_KEY_ENV = "OPENVLA_API_KEY"
RETRY_STATUS = (503,)


class ServerError(RuntimeError):
    """The server answered with an error: ``status`` is the HTTP code, the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status
        self.message = message


REQUEST_FIELDS = ("image", "full_image", "instruction", "wrist_image", "state", "proprio", "unnorm_key")


class Client:
    """A remote policy: ``act(observation)`` posts to ``{url}/act`` and returns the action chunk [T, D]."""

    def __init__(self, url: str, *, api_key: str | None = None, unnorm_key: str | None = None,
                 timeout: float = 60.0, protocol: str = "msgpack", retries: int = 5,
                 max_workers: int = 8) -> None:
        if protocol not in ("msgpack", "json"):
            raise ValueError(f"unknown protocol {protocol!r}; valid: ['msgpack', 'json']")
        self.url = url.rstrip("/")
        self.unnorm_key = unnorm_key
        self.protocol = protocol
        self.retries = retries
        self.max_workers = max_workers
        self.last_timing: dict[str, float] = {}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # TCP_NODELAY: a request's headers and body go out as separate writes; don't let Nagle hold the body.
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._inputs: list[str] | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------------------------------- Policy
    def reset(self) -> None:
        """The server keeps no per-episode state, so there is nothing to forget."""

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        """One observation -> action chunk [T, D] (T = 1 for single-step models)."""
        action, self.last_timing = self.predict(observation)
        return action.reshape(-1, action.shape[-1]).astype(np.float32)

    def act_batch(self, observations: list[dict[str, Any]]) -> list[np.ndarray]:
        """Several observations sent concurrently, so the server can batch them into one forward pass."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="openvla-client")
        return list(self._pool.map(self.act, observations))

    # -------------------------------------------------------------------------------------- requests
    def predict(self, observation: dict[str, Any]) -> tuple[np.ndarray, dict[str, float]]:
        """One observation -> (action as the server sent it: [D] or [T, D], server_timing)."""
        named = observation.get("images") or {}
        body: dict[str, Any] = {}
        for key in self._model_inputs():
            value = observation.get(key, named.get(key))
            if value is None:
                continue
            if key in REQUEST_FIELDS:
                body[key] = value
            else:  # a camera of the model's, by name
                body.setdefault("images", {})[key] = value
        if isinstance(body.get("image"), np.ndarray):
            body["image"] = np.ascontiguousarray(body["image"])
        if self.unnorm_key is not None:
            body["unnorm_key"] = self.unnorm_key
        if self.protocol == "msgpack":
            response = self._request("POST", "/act", content=pack(body),
                                     headers={"Content-Type": "application/msgpack"})
            return read_reply(unpack(response.content))
        content = json.dumps(body, default=_json_numpy_default)
        response = self._request("POST", "/act", content=content,
                                 headers={"Content-Type": "application/json"})
        return read_reply(response.json())

    def metadata(self) -> dict[str, Any]:
        """The server's model description (``GET /metadata``)."""
        return self._request("GET", "/metadata").json()

    def healthy(self) -> bool:
        """True when the server answers ``/healthz`` with 200 (model loaded)."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/healthz`` until the model is loaded; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url} was not ready within {timeout:g} s")
            time.sleep(0.2)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ helpers
    def _model_inputs(self) -> list[str]:
        """The observation keys the served model takes (asked once), so unused cameras are not sent."""
        if self._inputs is None:
            self._inputs = list(self.metadata().get("inputs") or ["image", "instruction"])
        return self._inputs

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying 503 (loading, busy) and refused connections with backoff; other errors raise."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as err:
                if last:
                    raise ServerError(0, f"cannot connect to {self.url}: {err}") from err
                time.sleep(min(0.25 * 2**attempt, 5.0))
                continue
            if response.status_code == 200:
                return response
            if response.status_code in RETRY_STATUS and not last:
                time.sleep(min(float(response.headers.get("retry-after", 0.25 * 2**attempt)), 5.0))
                continue
            raise ServerError(response.status_code, _error_message(response))
        raise AssertionError("unreachable")


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]


def _json_numpy_default(obj: Any) -> Any:
    """json-numpy's encoding of arrays, as the reference's clients send them."""
    import base64

    if isinstance(obj, np.ndarray | np.generic):
        arr = np.ascontiguousarray(obj)
        return {"__numpy__": base64.b64encode(arr.tobytes()).decode("ascii"), "dtype": arr.dtype.str,
                "shape": list(arr.shape)}
    raise TypeError(f"cannot send objects of type {type(obj).__name__}")
