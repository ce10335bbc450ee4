"""Decoding request bodies off the event loop: small bodies on a thread, large ones in a child process.

A thread is not enough for large bodies: json's and msgpack's C parsers hold the GIL for a whole body (a 15 MB
nested-list image: ~1 s), which would stall /healthz as if the parse ran on the event loop. One decode runs at a
time in each place, so a decode's transient memory (up to ~30x its body for pathological JSON) is bounded too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from openvla.serve.protocol import ActRequest, ProtocolError, decode_json, parse_request, unpack

PROCESS_MIN_BYTES = 2**20  # bodies from this size decode in the child process (a 224x224 json-numpy image: 0.2 MB)


def decode_body(body: bytes, as_msgpack: bool) -> tuple[ActRequest, bool]:
    """Body -> (validated request, double-encoded?). The decoded payload, with any fields the server ignores,
    is dropped here, so only the request's own arrays wait for the model."""
    payload, double = (unpack(body), False) if as_msgpack else decode_json(body)
    return parse_request(payload), double


class Decoder:
    """Runs ``decode_body`` and then ``check`` (on the decoded request) off the event loop."""

    def __init__(self, process_min_bytes: int = PROCESS_MIN_BYTES) -> None:
        self.process_min_bytes = process_min_bytes
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="openvla-serve-parse")
        self._process: ProcessPoolExecutor | None = None  # started on the first large body

    async def decode(self, body: bytes, as_msgpack: bool,
                     check: Callable[[ActRequest], Any]) -> tuple[ActRequest, Any, bool]:
        """(request, what ``check`` returned, double-encoded?)."""
        loop = asyncio.get_running_loop()
        if len(body) < self.process_min_bytes:
            return await loop.run_in_executor(self.thread, self._decode_and_check, body, as_msgpack, check)
        if self._process is None:
            self._process = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            request, double = await loop.run_in_executor(self._process, decode_body, body, as_msgpack)
        except BrokenProcessPool as err:
            self._process = None
            raise ProtocolError(500, "the decoding process died on this body (out of memory?)") from err
        return request, await loop.run_in_executor(self.thread, check, request), double

    @staticmethod
    def _decode_and_check(body: bytes, as_msgpack: bool,
                          check: Callable[[ActRequest], Any]) -> tuple[ActRequest, Any, bool]:
        request, double = decode_body(body, as_msgpack)
        return request, check(request), double

    def close(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)
        if self._process is not None:
            self._process.shutdown(wait=False, cancel_futures=True)
