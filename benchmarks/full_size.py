"""openvla-7b at full size on this machine: does each path fit the memory a user has?

Writes a random checkpoint in the released layout (every one of the 982 keys and shapes of
../shared/fixtures/openvla-7b.state_dict_shapes.json, bf16, three ~5 GB shards, a released-style config.json),
tensor by tensor with little memory, then runs each row in its own process and reports its wall time and
peak RSS (the child's ru_maxrss from wait4; a server row reports the server's) against the row's budget.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/full_size.py --dir /tmp/openvla7b            # every row
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/full_size.py --dir /tmp/openvla7b --rows merge
    .venv/bin/python benchmarks/full_size.py --dir /tmp/openvla7b --table                     # print only

Rows run one at a time (a 7B model on a 2-core CPU: ~30+ min in all); each result is appended to
DIR/results.jsonl, so rows can be rerun alone and the table always shows the latest of each. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO.parent / "shared" / "fixtures" / "openvla-7b.state_dict_shapes.json"
GB = 1e9
SHARD_BYTES = 5.5 * GB  # at most this much per shard: 15.1 GB of bf16 -> three shards of ~5 GB
DATASET = "full_size_toy"
INSTRUCTION = "pick up the remote"
# name -> (what it runs, budget in GB of peak RSS or None)
ROWS = {
    "write": ("write the random checkpoint (streamed)", None),
    "load": ("VLA.from_pretrained (bf16, memory-mapped)", 16.0),
    "predict_224": ("load + predict_action, 224x224 image", 16.0),
    "predict_640x480": ("load + predict_action, 640x480 image", 16.0),
    "lora_bf16": ("openvla train mode=lora, bf16 base, 2 steps + adapter + merged final", 20.0),
    "lora_bf16_ckpt": ("the same with grad_checkpointing=true", 20.0),
    "lora_4bit": ("openvla train mode=lora quantize_base=bnb4, 2 steps + adapter + merged final", 10.0),
    "lora_4bit_ckpt": ("the same with grad_checkpointing=true", 10.0),
    "merge": ("openvla merge (bf16 adapter run) --layout openvla", 17.0),
    "merged_predict": ("load the merged model + predict (its default unnorm key)", 16.0),
    "int8_predict": ("load + quantize int8 (from bf16) + predict 224", 16.0),
    "serve_int8": ("openvla serve --quantize int8 + one POST /act (server's RSS)", 16.0),
}


# ------------------------------------------------------------------------------------------ checkpoint
def _init(name: str, shape: list[int], gen):
    """Random weights that keep activations finite: norms 1, biases 0, layer scales 0.1, the rest N(0, 0.02)."""
    import torch

    if len(shape) == 1 and name.endswith("bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if len(shape) == 1 and ("norm" in name or name.endswith("weight")):
        return torch.ones(shape, dtype=torch.bfloat16)
    if "scale_factor" in name or ".gamma" in name:
        return torch.full(shape, 0.1, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)


def write_checkpoint(directory: Path, shapes_file: Path = SHAPES) -> dict:
    """The released layout: three bf16 shards + index, config.json, statistics, a tokenizer."""
    import torch

    from openvla.checkpoint.openvla_hf import TOOLKIT_KEY, hf_config_for
    from openvla.checkpoint.stream import ShardWriter, write_index
    from openvla.config import get_preset
    from openvla.model.text_tokenizer import train_tokenizer

    shapes = json.loads(shapes_file.read_text())["state_dict"]
    directory.mkdir(parents=True, exist_ok=True)
    total = sum(math.prod(s) * 2 for s in shapes.values())
    n = math.ceil(total / SHARD_BYTES)
    shards: list[list[str]] = [[] for _ in range(n)]
    done = 0
    for key, shape in shapes.items():
        shards[min(n - 1, int(done / (total / n)))].append(key)
        done += math.prod(shape) * 2
    gen = torch.Generator().manual_seed(0)
    weight_map, size = {}, 0
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        writer = ShardWriter(directory / name, [(k, torch.bfloat16, tuple(shapes[k])) for k in keys])
        for k in keys:
            writer.write(k, _init(k, shapes[k], gen))
            weight_map[k] = name
        writer.close()
        size += writer.total_size
    write_index(directory, weight_map, size)
    config = get_preset("openvla-7b")
    config.norm_stats = {"bridge_orig": {"action": {
        "q01": [-0.03, -0.04, -0.03, -0.1, -0.1, -0.2, 0.0], "q99": [0.03, 0.04, 0.03, 0.1, 0.1, 0.2, 1.0],
        "mask": [True] * 6 + [False]}}}
    hf = hf_config_for(config)
    hf.pop(TOOLKIT_KEY)  # the released config.json has no such key
    hf["torch_dtype"] = "bfloat16"
    (directory / "config.json").write_text(json.dumps(hf, indent=2))
    (directory / "dataset_statistics.json").write_text(json.dumps(config.norm_stats, indent=2))
    train_tokenizer([INSTRUCTION, "open the drawer"], 32000, 256).save_pretrained(str(directory))
    return {"shards": n, "tensors": len(shapes), "bytes": size}


def write_dataset(root: Path) -> Path:
    """A few episodes with 7-D actions for the LoRA rows (the checkpoint's action size)."""
    from openvla.data.episodes import Episode
    from openvla.data.lerobot import LeRobotWriter

    if (root / "meta").exists():
        return root
    rng = np.random.default_rng(0)
    with LeRobotWriter(root, fps=10) as writer:
        for i in range(4):
            writer.add_episode(Episode(images={"image": rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)},
                                       actions=rng.uniform(-1, 1, (4, 7)).astype(np.float32),
                                       instruction=INSTRUCTION, episode_index=i))
    return root


# ------------------------------------------------------------------------------------------ rows (child)
def _predict(vla, size: tuple[int, int]) -> dict:
    image = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    start = time.perf_counter()
    action = vla.predict_action(image=image, instruction=INSTRUCTION)
    return {"predict_s": round(time.perf_counter() - start, 1), "action": np.round(action, 4).tolist(),
            "finite": bool(np.isfinite(action).all())}


def _load(path: Path, **kw):
    from openvla.model.policy import load_for_inference

    start = time.perf_counter()
    vla = load_for_inference(path, **kw)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in vla.parameters()})
    return vla, {"load_s": round(time.perf_counter() - start, 1), "dtypes": dtypes,
                 "params": sum(p.numel() for p in vla.parameters())}


def _train(ckpt: Path, data: Path, out: Path, *extra: str) -> dict:
    import shutil

    from openvla.cli import main

    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume of the last one
    sets = ["mode=lora", "max_steps=2", "batch_size=1", "num_workers=0", "save_every=100", "log_every=1", *extra]
    start = time.perf_counter()
    code = main(["train", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--set", *sets])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").exists() else []
    return {"exit": code, "wall_s": round(time.perf_counter() - start, 1),
            "step_s": [round(r["step_time_s"], 1) for r in rows], "loss": [round(r["loss"], 3) for r in rows],
            "adapter": (out / "adapter" / "adapter_model.safetensors").exists(),
            "final": (out / "final" / "vla_config.json").exists()}


def _serve(ckpt: Path) -> dict:
    import httpx
    import json_numpy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "openvla.cli", "serve", "--checkpoint", str(ckpt), "--port", str(port),
           "--quantize", "int8"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "OPENVLA_API_KEY": ""})
    result: dict = {}
    try:
        while True:
            if proc.poll() is not None:
                result["server_exit"] = proc.returncode
                break
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                result["healthz"] = health.text[:80]
                if health.status_code == 200 and "loading" not in health.text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(5)
        result["ready_s"] = round(time.perf_counter() - start, 1)
        if proc.poll() is None:
            image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
            t0 = time.perf_counter()
            resp = httpx.post(f"http://127.0.0.1:{port}/act", content=json_numpy.dumps(
                {"image": image, "instruction": INSTRUCTION}), headers={"Content-Type": "application/json"},
                timeout=1800)
            result.update(status=resp.status_code, act_s=round(time.perf_counter() - t0, 1),
                          answer=resp.text[:200])
    finally:
        if proc.poll() is None:
            proc.terminate()
        _, status, usage = os.wait4(proc.pid, 0)
        result["server_peak_rss_gb"] = round(usage.ru_maxrss * 1024 / GB, 2)
    return result


def run_row(name: str, directory: Path, shapes: Path = SHAPES) -> dict:
    ckpt = directory / "checkpoint"
    data = write_dataset(directory / DATASET)
    if name == "write":
        return write_checkpoint(ckpt, shapes)
    if name == "load":
        return _load(ckpt)[1]
    if name in ("predict_224", "predict_640x480"):
        vla, info = _load(ckpt)
        return {**info, **_predict(vla, (224, 224) if name == "predict_224" else (640, 480))}
    if name == "lora_bf16":
        return _train(ckpt, data, directory / "run-bf16")
    if name == "lora_bf16_ckpt":
        import shutil

        info = _train(ckpt, data, directory / name, "grad_checkpointing=true")
        shutil.rmtree(directory / name / "final", ignore_errors=True)  # 15 GB of disk, as the bf16 run's
        return info
    if name in ("lora_4bit", "lora_4bit_ckpt"):
        import shutil

        extra = ["grad_checkpointing=true"] if name.endswith("ckpt") else []
        info = _train(ckpt, data, directory / name, "quantize_base=bnb4", *extra)
        shutil.rmtree(directory / name / "final", ignore_errors=True)  # 15 GB of disk, as the bf16 run's
        return info
    if name == "merge":
        from openvla.cli import main

        start = time.perf_counter()
        code = main(["merge", "--base", str(ckpt), "--adapter", str(directory / "run-bf16" / "adapter"),
                     "--out", str(directory / "merged"), "--layout", "openvla"])
        return {"exit": code, "wall_s": round(time.perf_counter() - start, 1),
                "shards": len(list((directory / "merged").glob("model-*.safetensors"))),
                "torch_dtype": json.loads((directory / "merged" / "config.json").read_text())["torch_dtype"]}
    if name == "merged_predict":
        vla, info = _load(directory / "merged")
        return {**info, "default_unnorm_key": vla.resolve_unnorm_key(None), **_predict(vla, (224, 224))}
    if name == "int8_predict":
        vla, info = _load(ckpt, quantize="int8")
        return {**info, **_predict(vla, (224, 224))}
    if name == "serve_int8":
        return _serve(ckpt)
    raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROWS)}")


class RssTimeline:
    """Samples this process's resident memory each second: where in a row the peak falls (max per 10 s)."""

    def __init__(self) -> None:
        import threading

        self.start = time.perf_counter()
        self.windows: dict[int, float] = {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            with open("/proc/self/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            window = int((time.perf_counter() - self.start) // 10) * 10
            self.windows[window] = max(self.windows.get(window, 0.0), round(kb * 1024 / GB, 2))
            time.sleep(1)

    def points(self) -> list[list[float]]:
        return [[t, gb] for t, gb in sorted(self.windows.items())]


# ------------------------------------------------------------------------------------------ parent
def measure(name: str, directory: Path, shapes: Path = SHAPES) -> dict:
    """Run one row in a fresh process; its peak RSS comes from wait4, which reports that child alone."""
    cmd = [sys.executable, __file__, "--dir", str(directory), "--shapes", str(shapes), "--child", name]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if lines else {"error": out[-500:]}
    row = {"row": name, "exit": os.waitstatus_to_exitcode(status), "wall_s": round(time.perf_counter() - start, 1),
           "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 2), **{k: v for k, v in result.items()
                                                                    if k not in ("exit", "wall_s")},
           "row_exit": result.get("exit"), "threads": os.environ.get("OMP_NUM_THREADS")}
    with open(directory / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(directory: Path) -> str:
    latest: dict[str, dict] = {}
    path = directory / "results.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        latest[r["row"]] = r
    lines = ["| row | what | wall s | peak RSS GB | budget GB | met | notes |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for name, (what, budget) in ROWS.items():
        r = latest.get(name)
        if r is None:
            continue
        rss = r.get("server_peak_rss_gb", r["peak_rss_gb"])
        ok = r["exit"] == 0 and r.get("row_exit") in (None, 0) and r.get("status", 200) == 200
        met = "" if budget is None else ("yes" if ok and rss <= budget else "NO")
        notes = {k: r[k] for k in ("predict_s", "load_s", "step_s", "status", "act_s", "shards", "torch_dtype",
                                   "default_unnorm_key", "finite", "error") if k in r}
        lines.append(f"| {name} | {what} | {r['wall_s']} | {rss} | {budget or ''} | {met} | "
                     f"{json.dumps(notes)[1:-1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/openvla7b"))
    parser.add_argument("--shapes", type=Path, default=SHAPES, help="the 982 keys and shapes of openvla-7b")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--table", action="store_true", help="print the table of results so far and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        timeline = RssTimeline()
        result = run_row(args.child, args.dir, args.shapes)
        print("RESULT " + json.dumps({**result, "rss_timeline": timeline.points()}), flush=True)
        return
    if not args.table:
        for name in args.rows.split(","):
            if name == "write" and (args.dir / "checkpoint" / "config.json").exists():
                print("checkpoint exists; skipping write (delete DIR/checkpoint to rewrite it)")
                continue
            print(json.dumps(measure(name, args.dir, args.shapes)), flush=True)
    print(table(args.dir))


if __name__ == "__main__":
    main()
