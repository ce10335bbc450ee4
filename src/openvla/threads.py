"""How many threads torch may use in a command: the cores this process may run on, less its worker processes
and the cores other programs keep busy right now.

torch's default (one thread per core) is a poor choice on a small shared machine: when another process keeps a
core busy, the threads of every parallel operation wait for the slowest one (measured on a 2-core machine: a
tiny training step took 8-18 s instead of 0.4 s). ``OMP_NUM_THREADS``, when set, always wins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def available_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(cores, int(quota)) if quota else cores)


def busy_cores(window_s: float = 0.2) -> int:
    """Cores of this process's affinity mask that other programs kept busy over ``window_s`` (Linux; else 0)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    before = _cpu_times(allowed)
    if not before:
        return 0
    time.sleep(window_s)
    after = _cpu_times(allowed)
    busy = 0.0
    for cpu, (idle0, total0) in before.items():
        idle1, total1 = after.get(cpu, (idle0, total0))
        if total1 > total0:
            busy += 1 - (idle1 - idle0) / (total1 - total0)
    return int(busy + 0.5)


def pick_threads(workers: int = 0, processes: int = 1, busy: int = 0, cores: int | None = None) -> int:
    """Threads for each of ``processes`` processes on this machine, leaving a core to each of ``workers``
    (loader or simulator worker processes) and to each busy one; at least 1."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, processes) - workers - busy)


def set_threads(workers: int = 0) -> int:
    """Set torch's intra-op threads for this command (unless OMP_NUM_THREADS is set); returns the count used."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = pick_threads(workers, processes, busy_cores())
    torch.set_num_threads(n)
    return n


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _cpu_times(allowed: set[int]) -> dict[int, tuple[int, int]]:
    """cpu -> (idle + iowait jiffies, all jiffies) from /proc/stat, for the CPUs in ``allowed``."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed:
            values = [int(v) for v in fields[:8]]
            times[int(name[3:])] = (values[3] + values[4], sum(values))
    return times
