"""Dynamic batching: one worker thread owns the model and runs requests arriving close together as one call.

The worker takes the first waiting request, then waits up to ``window_s`` for more (never past
``max_batch``), splits what it has by group (the unnorm key: one forward pass per dataset's statistics) and
hands each group to ``run_batch``. Every request carries its own future, so each caller gets exactly the
result computed for its own input. If a batched call fails, its requests are retried one by one, so a
single bad input fails only its own request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("openvla.serve")

RunBatch = Callable[[list[Any], Hashable], list[Any]]


class QueueFull(Exception):
    """More requests are waiting than the queue allows."""


class ServerClosing(Exception):
    """The server stopped before this request ran."""


@dataclass
class Job:
    """One request in flight: its input, its group, its future and, once run, how it was run."""

    request: Any
    group: Hashable
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    batch_size: int = 0
    queue_ms: float = 0.0
    infer_ms: float = 0.0


_STOP = object()


class Batcher:
    """Groups requests arriving within ``window_s`` (at most ``max_batch``) into one ``run_batch`` call."""

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, window_s: float = 0.005,
                 max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1 or window_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, window >= 0; got {max_batch}, "
                             f"{max_queue}, {window_s}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._loop, name="openvla-serve-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress, then fail whatever is still waiting with ServerClosing."""
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        self.fail_pending()

    def close(self) -> None:
        """Refuse new requests (ServerClosing); queued ones still run."""
        self._closed = True

    def idle(self) -> bool:
        """True when no request is queued or running (each job is marked done once answered)."""
        return self._queue.unfinished_tasks == 0

    def fail_pending(self) -> int:
        """Fail every request still waiting (not the batch in progress) with ServerClosing; returns how many."""
        failed = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return failed
            if job is not _STOP and job.future.set_running_or_notify_cancel():
                job.future.set_exception(ServerClosing("the server is shutting down"))
                failed += 1
            self._queue.task_done()

    def pending(self) -> int:
        """Requests waiting for the worker (not counting the batch being run)."""
        return self._queue.qsize()

    def submit(self, request: Any, group: Hashable = None) -> Job:
        """Queue a request; raises QueueFull when ``max_queue`` requests are already waiting."""
        if self._closed:
            raise ServerClosing("the server is shutting down")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.max_queue} requests are already waiting")
        job = Job(request, group)
        self._queue.put(job)
        return job

    # ------------------------------------------------------------------------------------------ worker
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stop = self._collect(first)
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # skip timed-out ones
            groups: dict[Hashable, list[Job]] = {}
            for job in live:
                groups.setdefault(job.group, []).append(job)
            for group, members in groups.items():
                self._run(group, members)
            for _ in range(len(jobs) + stop):  # + the stop marker
                self._queue.task_done()
            if stop:
                return

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """The first job plus whatever arrives within the window, up to max_batch."""
        jobs = [first]
        deadline = time.perf_counter() + self.window_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self, group: Hashable, jobs: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results = self.run_batch([job.request for job in jobs], group)
            if len(results) != len(jobs):
                raise RuntimeError(f"the model returned {len(results)} results for {len(jobs)} inputs")
        except Exception as err:
            if len(jobs) > 1:
                log.warning("batch of %d failed (%s: %s); retrying its requests one by one",
                            len(jobs), type(err).__name__, err)
                for job in jobs:
                    self._run(group, [job])
                return
            jobs[0].future.set_exception(err)
            return
        infer_ms = (time.perf_counter() - start) * 1000
        for job, result in zip(jobs, results, strict=True):
            job.batch_size = len(jobs)
            job.queue_ms = (start - job.enqueued) * 1000
            job.infer_ms = infer_ms
            job.future.set_result(result)
