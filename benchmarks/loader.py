"""Loader throughput beside the training step it feeds, in one run: frames per second of training batches
(224x224, augmentation on) from LeRobot datasets, and samples per second of one small-preset training step.

    .venv/bin/python benchmarks/loader.py                    # png and jpeg frames, 2 workers, augmentation on
    .venv/bin/python benchmarks/loader.py --image-format video --workers 2 --no-augment

It writes a synthetic dataset of camera-like 224x224 frames per storage format once (``--root``, reused when
present), times ``--batches`` batches after ``--warmup`` ones, then times the small preset's full training
step (``benchmarks/train_modes.py``, same batch size, in its own process) and prints the ratio. Besides
wall-clock frames/s it prints the CPU milliseconds the worker processes spent per frame, which does not depend
on other load on the machine: ``1000 / cpu_ms * cores`` is what the cores could deliver if nothing else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from openvla.data.episodes import Episode
from openvla.data.lerobot import LeRobotDataset, write_dataset
from openvla.data.loader import make_loader


def camera_frames(length: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames that compress like real camera images: a lit table, a few moving objects, sensor noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([120 + 60 * yy, 110 + 40 * xx, 90 + 30 * (xx + yy)], -1)
    objects = [(rng.uniform(0.2, 0.8, 2), rng.uniform(0.05, 0.15), rng.uniform(0, 255, 3)) for _ in range(4)]
    frames = np.empty((length, size, size, 3), np.uint8)
    for t in range(length):
        img = background.copy()
        for (cx, cy), radius, colour in objects:
            cx, cy = cx + 0.1 * np.sin(t / 10), cy + 0.1 * np.cos(t / 12)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            img[inside] = colour
        frames[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255)
    return frames


def build(root: Path, episodes: int, length: int, size: int, image_format: str) -> LeRobotDataset:
    if not (root / "meta" / "info.json").exists():
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        data = (Episode(images={"image": camera_frames(length, size, rng)},
                        actions=rng.normal(size=(length, 7)).astype(np.float32), instruction=f"task {i % 5}",
                        states=rng.normal(size=(length, 8)).astype(np.float32), episode_index=i)
                for i in range(episodes))
        write_dataset(root, data, fps=10, image_format=image_format, progress=True)
        print(f"wrote {episodes * length} frames to {root} in {time.perf_counter() - t0:.1f} s")
    return LeRobotDataset(root)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux /proc; 0 elsewhere)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(ds: LeRobotDataset, args: argparse.Namespace) -> dict[str, float]:
    loader = make_loader([ds], batch_size=args.batch_size, seed=0, augment=args.augment,
                         num_workers=args.workers, image_size=args.model_size or args.size)
    for _ in range(args.warmup):
        next(loader)
    workers = getattr(loader._iterator, "_workers", [])
    pids = [w.pid for w in workers] or [os.getpid()]
    cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
    for _ in range(args.batches):
        batch = next(loader)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds(pids) - cpu0
    loader.close()
    frames = args.batches * args.batch_size
    out = args.model_size or args.size
    assert batch["images"]["image"].shape[1:] == (out, out, 3)
    return {"fps": frames / seconds, "cpu_ms": 1000 * cpu / frames, "seconds": seconds}


def training_step(batch_size: int, steps: int = 6) -> dict:
    """The small preset's full training step at this batch size (train_modes.py, in its own process)."""
    script = Path(__file__).with_name("train_modes.py")
    done = subprocess.run([sys.executable, str(script), "--one", "small", "full", "--batch", str(batch_size),
                           "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="dataset folder (written if missing; default: a temp folder)")
    parser.add_argument("--image-format", nargs="+", default=["png", "jpeg"], choices=["png", "jpeg", "video"])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--length", type=int, default=50, help="frames per episode")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model-size", type=int, default=None,
                        help="size the loader resizes to before augmenting (the model's input; default --size)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--no-step", dest="step", action="store_false", help="skip the training-step timing")
    args = parser.parse_args()
    results = {}
    for fmt in args.image_format:
        root = args.root or Path(tempfile.gettempdir()) / f"openvla-bench-{fmt}-{args.size}"
        results[fmt] = measure(build(root, args.episodes, args.length, args.size, fmt), args)
    step = training_step(args.batch_size) if args.step else None
    cores = os.cpu_count() or 1
    out = args.model_size or args.size
    print(f"\n| storage | frames | delivered | workers | augment | batch | frames/s | worker CPU ms/frame | "
          f"frames/s if {cores} cores were free |" + (" x small-preset step |" if step else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if step else ""))
    for fmt, r in results.items():
        free = f"{1000 / r['cpu_ms'] * cores:.0f}" if r["cpu_ms"] else "-"
        ratio = f" {r['fps'] / step['samples_per_s']:.1f} |" if step else ""
        print(f"| {fmt} | {args.size}x{args.size} | {out}x{out} | {args.workers} | {args.augment} | {args.batch_size} "
              f"| {r['fps']:.0f} | {r['cpu_ms']:.2f} | {free} |{ratio}")
    if step:
        print(f"small preset, full training, batch {args.batch_size}: {step['step_s'] * 1000:.0f} ms/step = "
              f"{step['samples_per_s']:.1f} samples/s (median of 6 steps, torch threads as default)")
    print(f"(load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
