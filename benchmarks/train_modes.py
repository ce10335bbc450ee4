"""Training throughput and peak memory per mode (full, LoRA, frozen vision, last layer, sandwich).

    python benchmarks/train_modes.py                      # tiny and small presets on this machine
    python benchmarks/train_modes.py --presets small --batch 16 --steps 10

Each (preset, mode) runs in its own process so its peak memory is its own (peak RSS on CPU, peak allocated
on GPU). Batches are synthetic (random pixels, real prompts and action tokens): this measures the step, not
the loader (see benchmarks/loader.py). MFU is printed on a GPU (6 x trainable-path FLOPs approximation).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

MODES = ("full", "lora", "frozen-vision", "last-layer", "sandwich")


def one(preset: str, mode: str, batch: int, steps: int) -> dict:
    from openvla import VLA, get_preset
    from openvla.train.batching import Collator, sample_builder
    from openvla.train.config import TrainConfig
    from openvla.train.modes import apply_mode, count_parameters
    from openvla.train.trainer import make_optimizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    vla = VLA.create(get_preset(preset), ["pick up the block"], seed=0)
    rng = np.random.default_rng(0)
    builder = sample_builder(vla.processor)
    size = vla.config.image_size
    frames = [{"images": {"image": rng.integers(0, 255, (size, size, 3), dtype=np.uint8)},
               "actions": rng.uniform(-1, 1, (1, 7)), "instruction": "pick up the block"} for _ in range(batch)]
    data = Collator(vla.tokenizer.pad_token_id)([builder(f) for f in frames])
    inputs = {k: data[k].to(device) for k in ("input_ids", "pixel_values", "attention_mask", "labels")}
    model = apply_mode(vla, mode).to(device)
    trainable, total = count_parameters(model)
    optimizer, _ = make_optimizer(model, TrainConfig(lr=1e-4))
    bf16 = device == "cuda"
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    out = {"preset": preset, "mode": mode, "trainable": trainable, "total": total, "step_s": step,
           "samples_per_s": batch / step, "peak_gib": peak}
    if device == "cuda":
        tokens = inputs["input_ids"].numel() + batch * vla.config.num_prefix_tokens
        peak_flops = 989e12  # H100 dense bf16; adjust for other GPUs
        out["mfu"] = 6 * total * tokens / step / peak_flops
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--one", nargs=2, metavar=("PRESET", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.batch, args.steps)))
        return
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            done = subprocess.run([sys.executable, __file__, "--one", preset, mode, "--batch", str(args.batch),
                                   "--steps", str(args.steps)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nbatch {args.batch}, median of {args.steps} steps, device "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, threads {torch.get_num_threads()}")
    print("| preset | mode | trainable | share | step s | samples/s | peak GiB |" +
          (" MFU |" if "mfu" in rows[0] else ""))
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if "mfu" in rows[0] else ""))
    for r in rows:
        mfu = f" {100 * r['mfu']:.1f}% |" if "mfu" in r else ""
        print(f"| {r['preset']} | {r['mode']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.1f}% | "
              f"{r['step_s']:.3f} | {r['samples_per_s']:.1f} | {r['peak_gib']:.2f} |{mfu}")


if __name__ == "__main__":
    main()
