"""Turn a write that failed on a full disk into one line naming the device and the space needed."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class DiskFullError(RuntimeError):
    """A checkpoint or model could not be written for lack of space; the partial files were removed."""


def disk_full_error(err: BaseException, target: Path, need_bytes: int) -> DiskFullError | None:
    """A DiskFullError for ``err`` when it came from a full disk (ENOSPC anywhere in its chain, or less room
    left at ``target`` than ``need_bytes``: torch's zip writer reports a short write as 'unexpected pos');
    None for any other failure. Call it after removing the partial write, so the free space is what a rerun has."""
    existing = _existing(target)
    free = shutil.disk_usage(existing).free
    if not (_enospc(err) or free < need_bytes):
        return None
    device, mount = _device_of(existing)
    return DiskFullError(f"no space left on {device} (mounted at {mount}, {_size(free)} free) while writing "
                         f"{target}: need ~{_size(need_bytes)}; free space there or write to another disk "
                         f"(the partial write was removed)")


def _enospc(err: BaseException | None) -> bool:
    """ENOSPC/EDQUOT in ``err``, its causes, or the per-rank failures torch.distributed.checkpoint collects."""
    todo, seen = [err], set()
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        failures = getattr(err, "failures", None)  # CheckpointException: {rank: (exception, traceback)}
        wrapped = [f[0] if isinstance(f, tuple) else f for f in (failures or {}).values()]
        todo += [err.__cause__, err.__context__, *wrapped]
    return False


def _existing(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _device_of(path: Path) -> tuple[str, str]:
    """(device, mount point) of the file system holding ``path``, from /proc/mounts (the longest match)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:  # not Linux
        return "the device", str(path.anchor)
    text, best = str(path), ("the device", "")
    for line in lines:
        device, mount = (line.split() + ["", ""])[:2]
        mount = mount.replace("\\040", " ")
        inside = text == mount or text.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (device, mount)
    return best


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
