"""The HTTP server: `POST /act` (json-numpy or msgpack-numpy), `GET /healthz`, `GET /metadata`, `GET /openapi.json`.

The model loads in a background thread (requests get 503 until it has answered a warm-up prediction). Bodies are
decoded off the event loop (``decode.py``) and inference runs on the batcher's worker thread, so health checks
stay responsive; the memory that requests in flight hold is bounded (``max_queued_mb``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from openvla.serve.backend import make_backend
from openvla.serve.batcher import Batcher, Job, QueueFull, ServerClosing
from openvla.serve.decode import Decoder
from openvla.serve.openapi import act_operation
from openvla.serve.protocol import (
    MAX_INSTRUCTION_CHARS,
    ActRequest,
    ProtocolError,
    json_reply,
    msgpack_reply,
)

log = logging.getLogger("openvla.serve")

API_KEY_ENV = "OPENVLA_API_KEY"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
DEFAULT_REQUEST_TIMEOUT_S = 60.0
# A request may wait for the batch in progress and then run in its own: two batches of up to max_batch_size
# rows, each row at most one warm-up prediction's time on a compute-bound device (a CPU).
WARM_UP_BATCHES = 2


@dataclass
class ServeSettings:
    """The server's knobs (the flags of `openvla serve`)."""

    unnorm_key: str | None = None  # used when a request names none
    api_key: str | None = None  # when set, /act and /metadata need it (Authorization: Bearer KEY)
    max_batch_size: int = 8  # 1 turns batching off
    batch_window_ms: float = 5.0  # how long the worker waits for more requests after the first
    max_queue: int = 64  # waiting requests beyond this get 503
    max_body_mb: float = 16.0  # larger bodies get 413
    max_queued_mb: float = 256.0  # bodies and decoded inputs held by all requests in flight; beyond it 503
    request_timeout_s: float | None = None  # None: derived from the warm-up (``derive_request_timeout``)
    body_timeout_s: float = 10.0  # a body not received in full by then gets 408
    shutdown_drain_s: float = 5.0  # on SIGTERM, queued requests still start for this long; later ones get 503
    device: str | None = None  # where a checkpoint loads ("cuda", "cpu"); None: the checkpoint's default
    dtype: str | None = None  # "bfloat16", "float16", "float32"; None: as saved
    compile: bool = False  # torch.compile the model (``VLA.compile_inference``); compiled by the warm-up
    quantize: str | None = None  # "int8", "bnb8", "bnb4": the language model's weights (``model/quantize.py``)

    def __post_init__(self) -> None:
        if self.max_queued_mb < self.max_body_mb:
            raise ValueError(f"--max-queued-mb ({self.max_queued_mb:g}) must be at least --max-body-mb "
                             f"({self.max_body_mb:g}), or no body that large could ever be taken")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def derive_request_timeout(warm_up_s: float, max_batch_size: int) -> float:
    """The default request timeout: 60 s, or more when one warm-up prediction shows the model is slow."""
    return max(DEFAULT_REQUEST_TIMEOUT_S, round(WARM_UP_BATCHES * max_batch_size * warm_up_s, 1))


class MemoryBudget:
    """Bytes held by requests in flight (bodies while read, then decoded inputs), capped at ``limit``.

    Used from the event loop only, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[Hold]:
        """One request's share, released when the request is answered."""
        share = Hold(self)
        try:
            yield share
        finally:
            share.resize(0)


class Hold:
    """What one request holds of a ``MemoryBudget``."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, n: int) -> None:
        """Take ``n`` more bytes, or 503 when the budget cannot spare them."""
        if self.budget.held + n > self.budget.limit:
            mb = self.budget.limit / 2**20
            raise ProtocolError(503, f"the server is busy (requests in flight already hold close to the "
                                     f"{mb:g} MB limit, --max-queued-mb); retry shortly")
        self.budget.held += n
        self.size += n

    def resize(self, n: int) -> None:
        """Hold exactly ``n`` bytes (after decoding: the arrays instead of the body)."""
        self.budget.held += n - self.size
        self.size = n


def request_nbytes(request: ActRequest) -> int:
    """Memory a decoded request keeps until it is answered."""
    values = list(request.observation().values())
    values += [v for d in values if isinstance(d, dict) for v in d.values()]  # cameras by name
    return sum(v.nbytes for v in values if isinstance(v, np.ndarray)) + len(request.instruction) * 4


class ServerState:
    """The model (once loaded and warmed up), the load error (if any), the batcher and the parse thread."""

    def __init__(self, target: Any, settings: ServeSettings,
                 on_load_error: Callable[[BaseException], None] | None = None) -> None:
        self.target = target
        self.settings = settings
        self.on_load_error = on_load_error
        self.backend: Any = None
        self.token_cap: Any = None  # counts a VLA's instruction tokens; None: only the character cap
        self.error: str | None = None
        self.warm_up_s: float | None = None
        self.request_timeout_s = settings.request_timeout_s or DEFAULT_REQUEST_TIMEOUT_S
        self.batcher = Batcher(self._run_batch, settings.max_batch_size, settings.batch_window_ms / 1000,
                               settings.max_queue)
        self.budget = MemoryBudget(int(settings.max_queued_mb * 2**20))
        self.decoder = Decoder()
        self.loader: threading.Thread | None = None

    def _run_batch(self, requests: list[Any], group: Any) -> list[Any]:
        return self.backend.predict(requests, group)

    def start_loading(self) -> None:
        self.loader = threading.Thread(target=self.load, name="openvla-serve-loader", daemon=True)
        self.loader.start()

    def load(self) -> None:
        """Build and warm up the backend; on failure record the error (and tell ``on_load_error``)."""
        start = time.perf_counter()
        try:
            backend, token_cap, self.warm_up_s = self._build()
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}".splitlines()[0]
        if self.error is not None:  # out of the except block, so its traceback (and any model it held) is freed
            log.error("model failed to load: %s", self.error)
            if self.on_load_error is not None:
                self.on_load_error(RuntimeError(self.error))
            return
        self._set_request_timeout()
        self.token_cap = token_cap
        self.backend = backend
        meta = backend.metadata()
        log.info("model %s ready in %.1f s (warm-up %.2f s; request timeout %g s; action_dim=%s, chunk=%s, "
                 "unnorm keys=%s)", meta["model"], time.perf_counter() - start, self.warm_up_s,
                 self.request_timeout_s, meta["action_dim"], meta["chunk_length"], meta["unnorm_keys"])

    def _build(self) -> tuple[Any, Any, float]:
        """The backend, its token cap (or None) and the seconds its warm-up prediction took."""
        s = self.settings
        backend = make_backend(self.target, s.unnorm_key, s.device, s.dtype, s.compile, s.quantize)
        token_cap = getattr(backend, "token_cap", lambda: None)()
        start = time.perf_counter()
        backend.warm_up()
        return backend, token_cap, time.perf_counter() - start

    def _set_request_timeout(self) -> None:
        chosen, warm = self.settings.request_timeout_s, self.warm_up_s or 0.0
        if chosen is None:
            self.request_timeout_s = derive_request_timeout(warm, self.settings.max_batch_size)
        elif chosen < WARM_UP_BATCHES * warm:
            log.warning("--request-timeout %g s is shorter than two predictions (the warm-up took %.1f s): "
                        "requests will get 504; raise --request-timeout or leave it out to derive it",
                        chosen, warm)

    def ready(self) -> Any:
        """The backend, or a 503 saying why there is none."""
        if self.backend is not None:
            return self.backend
        if self.error is not None:
            raise ProtocolError(503, f"the model failed to load: {self.error}")
        raise ProtocolError(503, "the model is still loading; retry shortly")

    def check(self, request: ActRequest, backend: Any) -> Any:
        """The request's group (its unnorm key), or 422 for an input the model cannot take; off the event loop."""
        if self.token_cap is not None:
            self.token_cap.check(request.instruction)
        try:
            return backend.check(request)
        except ValueError as err:
            raise ProtocolError(422, str(err)) from err

    async def drain(self, forced: Callable[[], bool] = lambda: False) -> None:
        """On shutdown: refuse new requests, let queued ones start for ``shutdown_drain_s``, answer the rest 503."""
        self.batcher.close()
        deadline = time.monotonic() + self.settings.shutdown_drain_s
        while not self.batcher.idle() and time.monotonic() < deadline and not forced():
            await asyncio.sleep(0.02)
        failed = self.batcher.fail_pending()
        if failed:
            log.warning("shutting down: %d queued request(s) answered 503 after the %g s drain "
                        "(--shutdown-drain)", failed, self.settings.shutdown_drain_s)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error is JSON: ``{"error": message, "status": code}``."""
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", "1")
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 408:
        headers["Connection"] = "close"  # the rest of the body may still come: don't read it as a request
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers or None)


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


async def read_body(request: Request, limit: int, hold: Hold, timeout: float) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading all of it, (503) what the
    memory budget cannot hold, and (408) a body that has not arrived in full within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError(400, f"bad Content-Length header {declared[:40]!r}")
        if int(declared) > limit:
            raise ProtocolError(413, f"body of {declared} bytes is over the {limit}-byte limit "
                                     "(--max-body-mb)")
        hold.grow(int(declared))
    chunks, total = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise ProtocolError(413, f"body is over the {limit}-byte limit (--max-body-mb)")
                if total > hold.size:
                    hold.grow(total - hold.size)
                chunks.append(chunk)
    except TimeoutError as err:
        raise ProtocolError(408, f"the body did not arrive within {timeout:g} s (got {total} bytes"
                                 f"{f' of {declared}' if declared else ''}; --body-timeout)") from err
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
        state.start_loading()
        try:
            yield
        finally:
            state.batcher.stop()
            state.decoder.close()

    # No API browser on a robot server, but the schema, so clients and fuzzers know /act. No slash redirects:
    # `/act/` is a JSON 404, not a plain-text 307.
    app = FastAPI(title="openvla serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", redirect_slashes=False)
    app.state.serve = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)  # keeps 405's Allow

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s: %s: %s", request.url.path, type(exc).__name__, exc, exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

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
        limits = {"request_timeout_s": state.request_timeout_s, "warm_up_s": round(state.warm_up_s or 0.0, 3),
                  "max_instruction_chars": MAX_INSTRUCTION_CHARS,
                  "max_instruction_tokens": state.token_cap.limit if state.token_cap is not None else None}
        return JSONResponse({**backend.metadata(), **knobs, **limits,
                             "protocols": ["json-numpy", "msgpack-numpy"]})

    @app.post("/act", openapi_extra=act_operation(), response_class=Response)
    async def act(request: Request) -> Response:
        received = time.perf_counter()
        try:
            check_api_key(request, settings.api_key)
            backend = state.ready()
            with state.budget.hold() as hold:
                body = await read_body(request, settings.max_body_bytes, hold, settings.body_timeout_s)
                content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                as_msgpack = content_type in MSGPACK_TYPES
                act_request, group, double = await state.decoder.decode(
                    body, as_msgpack, lambda r: state.check(r, backend))
                del body
                hold.resize(request_nbytes(act_request))
                try:
                    job = state.batcher.submit(act_request, group)
                except QueueFull as err:
                    raise ProtocolError(503, f"the server is busy ({err}); retry shortly") from err
                except ServerClosing as err:
                    raise ProtocolError(503, str(err)) from err
                action = await wait_for_job(job, state.request_timeout_s)
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


class JSONErrorProtocol(AutoHTTPProtocol):
    """uvicorn's HTTP protocol, answering a malformed request with a JSON error instead of plain text."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": f"malformed HTTP request: {msg}", "status": 400}).encode()
        head = (f"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
                "\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn with a graceful stop: stop accepting, drain the queue (``ServerState.drain``), then wait for every
    accepted request's answer (each ends by itself: its body within the body timeout, its batch within the
    request timeout), and exit 0 on SIGTERM instead of re-raising it."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state

    async def shutdown(self, sockets: list | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.state.drain(lambda: self.force_exit)
        s = self.state.settings
        self.config.timeout_graceful_shutdown = int(s.body_timeout_s + self.state.request_timeout_s) + 2
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # a clean stop: uvicorn would re-raise SIGTERM (exit 143)


def uvicorn_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000,
                   log_level: str = "info") -> DrainingServer:
    """The uvicorn server ``run`` uses (tests start the same one in a thread)."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            http=JSONErrorProtocol)
    return DrainingServer(config, app.state.serve)


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
    """Serve until interrupted (SIGINT, SIGTERM); returns 0, or 1 when the model failed to load."""
    settings = settings or ServeSettings()
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(log_level.upper())
    if not is_loopback(host) and not settings.api_key:
        log.warning("listening on %s with no API key: anyone who can reach port %d can drive the model; "
                    "set %s or --api-key", host, port, API_KEY_ENV)
    server: DrainingServer | None = None

    def stop(_: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(target, settings, on_load_error=stop)
    server = uvicorn_server(app, host, port, log_level)
    server.run()
    state: ServerState = app.state.serve
    if state.loader is not None:
        state.loader.join(timeout=30 if state.error else 0)
        if state.loader.is_alive():  # stopped while loading: the load cannot be interrupted
            log.info("stopped while the model was still loading")
            logging.shutdown()
            os._exit(1 if state.error else 0)  # a thread inside torch must not meet interpreter shutdown (abort)
    return 1 if state.error else 0


def api_key_from_env() -> str | None:
    """The API key from ``OPENVLA_API_KEY`` (empty counts as unset)."""
    return os.environ.get(API_KEY_ENV) or None
