"""Thread counts come from the cores this process may use, less its worker processes and busy cores."""

from __future__ import annotations

import pytest
import torch

from openvla import threads
from openvla.cli import main


def test_pick_threads_leaves_a_core_to_each_worker_and_busy_core():
    assert threads.pick_threads(workers=0, busy=0, cores=8) == 8
    assert threads.pick_threads(workers=2, busy=1, cores=8) == 5
    assert threads.pick_threads(workers=2, processes=2, cores=8) == 2
    assert threads.pick_threads(workers=4, busy=2, cores=2) == 1  # never below one


def test_available_cores_honours_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.available_cores() == len(threads.os.sched_getaffinity(0))


def test_busy_cores_counts_the_cpus_others_keep_busy(monkeypatch):
    samples = iter([{0: (100, 1000), 1: (100, 1000)}, {0: (110, 1100), 1: (190, 1100)}])  # cpu0 90% busy
    monkeypatch.setattr(threads, "_cpu_times", lambda allowed: next(samples))
    assert threads.busy_cores(window_s=0) == 1


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda window_s=0.2: 1)
    return calls


def test_set_threads_unless_omp_num_threads_says_otherwise(recorded, monkeypatch):
    assert threads.set_threads(workers=1) == 2 and recorded == [2]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads.set_threads(workers=1)
    assert recorded == [2]


@pytest.mark.parametrize("argv, expected", [
    (["train", "--preset", "tiny", "--data", "/nonexistent/data", "--set", "num_workers=2"], 1),
    (["eval", "--policy", "/nonexistent/checkpoint", "--num-envs", "2"], 1),
    (["serve", "--checkpoint", "/nonexistent/checkpoint"], 3),
])
def test_commands_set_threads_first(recorded, argv, expected, tmp_path):
    main(argv + ["--out", str(tmp_path / "out")] if argv[0] != "serve" else argv)  # each then fails: no such path
    assert recorded[:1] == [expected]
