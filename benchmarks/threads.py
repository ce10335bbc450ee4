"""A training step with torch's default threads vs. the count `openvla.threads` picks, with and without
another process keeping a core busy.

    python benchmarks/threads.py                     # small preset, full fine-tune, batch 8
    python benchmarks/threads.py --preset tiny --busy 0 1

Each row runs `benchmarks/train_modes.py --one PRESET full` in its own process with OMP_NUM_THREADS set, while
BUSY spinning Python processes run beside it; the median step time is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from openvla.threads import available_cores, busy_cores, pick_threads

HERE = Path(__file__).resolve().parent


def step_time(preset: str, threads: int, batch: int, steps: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, str(HERE / "train_modes.py"), "--one", preset, "full", "--batch",
                           str(batch), "--steps", str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["step_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="spinning processes beside the run")
    args = ap.parse_args()
    cores = available_cores()
    print(f"{cores} cores available; preset {args.preset}, batch {args.batch}, median of {args.steps} steps")
    print("| other busy processes | busy cores seen | threads | chosen by | step s |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for busy in args.busy:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            seen = busy_cores()
            picked = pick_threads(busy=seen)
            chosen = {cores: "torch default", picked: "openvla.threads"}
            if picked == cores:
                chosen[cores] = "both"
            for threads, who in sorted(chosen.items()):
                seconds = step_time(args.preset, threads, args.batch, args.steps)
                print(f"| {busy} | {seen} | {threads} | {who} | {seconds:.3f} |", flush=True)
        finally:
            for p in spinners:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
