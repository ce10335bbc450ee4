"""The batcher alone: grouping in the window, one answer per caller, failure isolation, back-pressure."""

from __future__ import annotations

import threading
import time

import pytest

from openvla.serve.batcher import Batcher, QueueFull, ServerClosing


class Recorder:
    """run_batch that squares numbers, records each call, and fails on negative inputs."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[object, list[int]]] = []
        self.delay = delay

    def __call__(self, requests: list[int], group: object) -> list[int]:
        self.calls.append((group, list(requests)))
        time.sleep(self.delay)
        if any(r < 0 for r in requests):
            raise ValueError(f"negative input in {requests}")
        return [r * r for r in requests]


def run_concurrently(batcher: Batcher, values: list[int], groups: list[object] | None = None) -> list[object]:
    """Submit every value from its own thread at once; return each caller's result (or exception)."""
    results: list[object] = [None] * len(values)
    start = threading.Barrier(len(values))

    def call(i: int) -> None:
        start.wait()
        job = batcher.submit(values[i], groups[i] if groups else None)
        try:
            results[i] = job.future.result(10)
        except Exception as err:
            results[i] = err

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(values))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_requests_in_the_window_share_a_call_and_each_gets_its_own_answer():
    rec = Recorder(delay=0.02)
    batcher = Batcher(rec, max_batch=4, window_s=0.05, max_queue=100)
    batcher.start()
    values = list(range(1, 13))
    assert run_concurrently(batcher, values) == [v * v for v in values]
    batcher.stop()
    sizes = [len(reqs) for _, reqs in rec.calls]
    assert sum(sizes) == 12 and max(sizes) == 4 and len(sizes) <= 6  # batched, never above max_batch


def test_batching_off_runs_one_request_per_call():
    rec = Recorder()
    batcher = Batcher(rec, max_batch=1, window_s=0.05)
    batcher.start()
    assert run_concurrently(batcher, [2, 3, 4]) == [4, 9, 16]
    batcher.stop()
    assert [len(reqs) for _, reqs in rec.calls] == [1, 1, 1]


def test_groups_never_share_a_call():
    rec = Recorder(delay=0.01)
    batcher = Batcher(rec, max_batch=8, window_s=0.05)
    batcher.start()
    values = list(range(1, 9))
    groups = ["a" if v % 2 else "b" for v in values]
    assert run_concurrently(batcher, values, groups) == [v * v for v in values]
    batcher.stop()
    for group, reqs in rec.calls:
        assert all(("a" if r % 2 else "b") == group for r in reqs)


def test_a_failing_input_fails_only_its_own_request():
    rec = Recorder()
    batcher = Batcher(rec, max_batch=8, window_s=0.05)
    batcher.start()
    results = run_concurrently(batcher, [1, 2, -3, 4])
    batcher.stop()
    assert results[0] == 1 and results[1] == 4 and results[3] == 16
    assert isinstance(results[2], ValueError) and "negative" in str(results[2])


def test_full_queue_refuses_and_stop_fails_the_waiting():
    gate = threading.Event()

    def blocked(requests: list[int], group: object) -> list[int]:
        gate.wait(10)
        return requests

    batcher = Batcher(blocked, max_batch=1, window_s=0.0, max_queue=2)
    batcher.start()
    running = batcher.submit(1)
    deadline = time.monotonic() + 5
    while batcher.pending() and time.monotonic() < deadline:  # the worker has taken the first request
        time.sleep(0.005)
    waiting = [batcher.submit(2), batcher.submit(3)]
    with pytest.raises(QueueFull):
        batcher.submit(4)
    gate.set()
    assert running.future.result(5) == 1
    assert [job.future.result(5) for job in waiting] == [2, 3]
    gate.clear()
    batcher.submit(5)
    late = batcher.submit(6)
    gate.set()
    batcher.stop()
    with pytest.raises(ServerClosing):
        batcher.submit(7)
    assert late.future.done()


def test_cancelled_requests_are_skipped():
    rec = Recorder()
    gate = threading.Event()
    batcher = Batcher(lambda reqs, g: (gate.wait(5), rec(reqs, g))[1], max_batch=1, window_s=0.0)
    batcher.start()
    first = batcher.submit(1)
    abandoned = batcher.submit(2)
    assert abandoned.future.cancel()  # a caller that timed out before its turn
    gate.set()
    assert first.future.result(5) == 1
    batcher.submit(3).future.result(5)
    batcher.stop()
    assert [reqs for _, reqs in rec.calls] == [[1], [3]]
