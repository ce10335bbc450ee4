"""The HTTP server: `POST /act` (json-numpy or msgpack-numpy), `GET /healthz`, `GET /metadata`.

The model loads in a background thread (requests get 503 until it is ready); inference runs on the batcher's
worker thread, off the event loop, so health checks stay responsive while the model works.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from openvla.serve.backend import make_backend
from openvla.serve.batcher import Batcher, Job, QueueFull, ServerClosing
from openvla.serve.protocol import (
    ProtocolError,
    decode_json,
    json_reply,
    msgpack_reply,
    parse_request,
    unpack,
)

log = logging.getLogger("openvla.serve")

API_KEY_ENV = "OPENVLA_API_KEY"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


@dataclass
class ServeSettings:
    """The server's knobs (the flags of `openvla serve`)."""

    unnorm_key: str | None = None  # used when a request names none
    api_key: str | None = None  # when set, /act and /metadata need it (Authorization: Bearer KEY)
    max_batch_size: int = 8  # 1 turns batching off
    batch_window_ms: float = 5.0  # how long the worker waits for more requests after the first
    max_queue: int = 64  # waiting requests beyond this get 503
    max_body_mb: float = 16.0  # larger bodies get 413
    request_timeout_s: float = 60.0  # a request not answered by then gets 504
    device: str | None = None  # where a checkpoint loads ("cuda", "cpu"); None: the checkpoint's default
    dtype: str | None = None  # "bfloat16", "float16", "float32"; None: as saved
    compile: bool = False  # torch.compile the model (``VLA.compile_inference``); compiled by the warm-up
    quantize: str | None = None  # "int8", "bnb8", "bnb4": the language model's weights (``model/quantize.py``)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


class ServerState:
    """The model (once loaded), the load error (if any) and the batcher."""

    def __init__(self, target: Any, settings: ServeSettings,
                 on_load_error: Callable[[BaseException], None] | None = None) -> None:
        self.target = target
        self.settings = settings
        self.on_load_error = on_load_error
        self.backend: Any = None
        self.error: str | None = None
        self.batcher = Batcher(self._run_batch, settings.max_batch_size, settings.batch_window_ms / 1000,
                               settings.max_queue)

    def _run_batch(self, requests: list[Any], group: Any) -> list[Any]:
        return self.backend.predict(requests, group)

    def load(self) -> None:
        """Build and warm up the backend; on failure record the error (and tell ``on_load_error``)."""
        start = time.perf_counter()
        try:
            s = self.settings
            backend = make_backend(self.target, s.unnorm_key, s.device, s.dtype, s.compile, s.quantize)
            backend.warm_up()
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            log.error("model failed to load: %s", self.error)
            if self.on_load_error is not None:
                self.on_load_error(err)
            return
        self.backend = backend
        meta = backend.metadata()
        log.info("model %s ready in %.1f s (action_dim=%s, chunk=%s, unnorm keys=%s)", meta["model"],
                 time.perf_counter() - start, meta["action_dim"], meta["chunk_length"], meta["unnorm_keys"])

    def ready(self) -> Any:
        """The backend, or a 503 saying why there is none."""
        if self.backend is not None:
            return self.backend
        if self.error is not None:
            raise ProtocolError(503, f"the model failed to load: {self.error}")
        raise ProtocolError(503, "the model is still loading; retry shortly")


def error_response(status: int, message: str) -> JSONResponse:
    """Every error is JSON: ``{"error": message, "status": code}``."""
    headers = {"Retry-After": "1"} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def check_api_key(request: Request, api_key: str | None) -> None:
    """401 unless the request has the key (``Authorization: Bearer KEY`` / ``Api-Key KEY``, ``X-API-Key``)."""
    if api_key is None:
        return
    supplied = request.headers.get("x-api-key")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "api-key"):
        supplied = value.strip()
    if supplied is None:
        raise ProtocolError(401, "this server needs an API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(supplied.encode(), api_key.encode()):
        raise ProtocolError(401, "wrong API key")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading all of it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(400, f"bad Content-Length header {declared[:40]!r}")
        if int(declared) > limit:
            raise ProtocolError(413, f"body of {declared} bytes is over the {limit}-byte limit "
                                     "(--max-body-mb)")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ProtocolError(413, f"body is over the {limit}-byte limit (--max-body-mb)")
            chunks.append(chunk)
    except ClientDisconnect as err:
        raise ProtocolError(400, "the client disconnected before sending the whole body") from err
    return b"".join(chunks)


async def wait_for_job(job: Job, timeout: float) -> Any:
    """The job's result; inference failures become 422 (input the model rejects), 500, 503 or 504."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout)
    except TimeoutError as err:
        raise ProtocolError(504, f"no answer within {timeout:g} s (--request-timeout)") from err
    except ServerClosing as err:
        raise ProtocolError(503, str(err)) from err
    except ValueError as err:
        raise ProtocolError(422, f"the model rejected the input: {err}") from err
    except Exception as err:
        log.error("inference failed: %s: %s", type(err).__name__, err, exc_info=err)
        raise ProtocolError(500, f"inference failed: {type(err).__name__}: {err}") from err


def create_app(target: Any, settings: ServeSettings | None = None,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The FastAPI app serving ``target``: a checkpoint directory, a VLA, a Policy, or a loader of one."""
    settings = settings or ServeSettings()
    state = ServerState(target, settings, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.batcher.start()
        threading.Thread(target=state.load, name="openvla-serve-loader", daemon=True).start()
        try:
            yield
        finally:
            state.batcher.stop()

    app = FastAPI(title="openvla serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def log_request(request: Request, call_next: Callable) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            batch = getattr(request.state, "batch_size", None)
            error = getattr(request.state, "error", None)
            client = f"{request.client.host}:{request.client.port}" if request.client else "-"
            log.info('%s "%s %s" %d %.1f ms%s%s', client, request.method, request.url.path, status,
                     (time.perf_counter() - start) * 1000, f" batch={batch}" if batch else "",
                     f" error: {error[:200]}" if error else "")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if state.backend is not None:
            return JSONResponse({"status": "ok", "queued": state.batcher.pending()})
        if state.error is not None:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metadata")
    async def metadata(request: Request) -> JSONResponse:
        try:
            check_api_key(request, settings.api_key)
            backend = state.ready()
        except ProtocolError as err:
            request.state.error = err.message
            return error_response(err.status, err.message)
        private = ("api_key", "device", "dtype", "unnorm_key")
        knobs = {k: v for k, v in asdict(settings).items() if k not in private}
        return JSONResponse({**backend.metadata(), **knobs, "protocols": ["json-numpy", "msgpack-numpy"]})

    @app.post("/act")
    async def act(request: Request) -> Response:
        received = time.perf_counter()
        try:
            check_api_key(request, settings.api_key)
            backend = state.ready()
            body = await read_body(request, settings.max_body_bytes)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            as_msgpack = content_type in MSGPACK_TYPES
            payload, double = (unpack(body), False) if as_msgpack else decode_json(body)
            act_request = parse_request(payload)
            try:
                group = backend.check(act_request)
            except ValueError as err:
                raise ProtocolError(422, str(err)) from err
            try:
                job = state.batcher.submit(act_request, group)
            except QueueFull as err:
                raise ProtocolError(503, f"the server is busy ({err}); retry shortly") from err
            except ServerClosing as err:
                raise ProtocolError(503, str(err)) from err
            action = await wait_for_job(job, settings.request_timeout_s)
        except ProtocolError as err:
            request.state.error = err.message
            return error_response(err.status, err.message)
        request.state.batch_size = job.batch_size
        timing = {"queue_ms": round(job.queue_ms, 3), "infer_ms": round(job.infer_ms, 3),
                  "total_ms": round((time.perf_counter() - received) * 1000, 3)}
        if as_msgpack:
            return Response(msgpack_reply(action, timing, job.batch_size), media_type="application/msgpack")
        return Response(json_reply(action, timing, job.batch_size, double), media_type="application/json")

    return app


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(target: Any, settings: ServeSettings | None = None, host: str = "127.0.0.1", port: int = 8000,
        log_level: str = "info") -> int:
    """Serve until interrupted; returns 0, or 1 when the model failed to load."""
    import uvicorn

    settings = settings or ServeSettings()
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(log_level.upper())
    if not is_loopback(host) and not settings.api_key:
        log.warning("listening on %s with no API key: anyone who can reach port %d can drive the model; "
                    "set %s or --api-key", host, port, API_KEY_ENV)
    server: uvicorn.Server | None = None

    def stop(_: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(target, settings, on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           timeout_graceful_shutdown=5))
    server.run()
    return 1 if app.state.serve.error else 0


def api_key_from_env() -> str | None:
    """The API key from ``OPENVLA_API_KEY`` (empty counts as unset)."""
    return os.environ.get(API_KEY_ENV) or None
