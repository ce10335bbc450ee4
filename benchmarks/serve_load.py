"""Load test for `openvla serve`: N concurrent clients x M requests, with dynamic batching off and on.

Starts `openvla serve` as a subprocess on a free loopback port for each mode, drives it from N client threads
(each with its own connection, each sending its own images) and checks every answer against the model's
in-process prediction for that exact input, so a lost or mixed-up request shows as an error or a wrong answer.

    .venv/bin/python benchmarks/serve_load.py --clients 16 --requests 50

Without --checkpoint it saves the tiny test model, sharpened so that actions depend on the image.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import json_numpy
import numpy as np

from openvla.serve.protocol import pack, unpack

NORM_STATS = {"bridge": {"action": {"q01": [-0.1] * 6 + [0.0], "q99": [0.1] * 6 + [1.0],
                                    "mask": [True] * 6 + [False]}}}


def tiny_checkpoint(directory: Path) -> Path:
    """The tiny preset with one dataset's statistics, projector and attention sharpened so that different
    images give different actions (a random tiny model answers nearly the same for every input)."""
    import torch

    from openvla import VLA, get_preset

    vla = VLA.create(get_preset("tiny"), ["open the drawer", "push the button"], seed=0)
    with torch.no_grad():
        for p in vla.projector.parameters():
            p.mul_(10.0)
        for name, p in vla.language_model.named_parameters():
            if "q_proj" in name or "k_proj" in name:
                p.mul_(20.0)
    vla.config.norm_stats = NORM_STATS
    return vla.save_pretrained(directory / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, port: int, max_batch: int, window_ms: float,
                 max_queue: int) -> subprocess.Popen:
    """`openvla serve` in a subprocess (no API key), once /healthz says the model is ready."""
    cmd = [sys.executable, "-m", "openvla.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
           "--max-batch-size", str(max_batch), "--batch-window-ms", str(window_ms),
           "--max-queue", str(max_queue), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OPENVLA_API_KEY": ""})
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start (exit code {proc.poll()})")
        time.sleep(0.2)


def post(http: httpx.Client, obs: dict, protocol: str) -> tuple[np.ndarray, int]:
    """One request; returns (action, batch size the server ran it in)."""
    if protocol == "msgpack":
        resp = http.post("/act", content=pack(obs), headers={"Content-Type": "application/msgpack"})
        resp.raise_for_status()
        reply = unpack(resp.content)
        return np.asarray(reply["action"]), int(reply["batch_size"])
    resp = http.post("/act", content=json_numpy.dumps(obs), headers={"Content-Type": "application/json"})
    resp.raise_for_status()
    return json_numpy.loads(resp.text), int(resp.json()["batch_size"])


def run_clients(url: str, inputs: list[list[dict]], expected: list[list[np.ndarray]], requests: int,
                protocol: str) -> dict:
    """Every client sends its own inputs in turn, one request in flight at a time; all start together."""
    n = len(inputs)
    latencies: list[list[float]] = [[] for _ in range(n)]
    batches: list[list[int]] = [[] for _ in range(n)]
    wrong = [0] * n
    errors: list[list[str]] = [[] for _ in range(n)]
    barrier = threading.Barrier(n + 1)

    def client(c: int) -> None:
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(base_url=url, timeout=120, transport=transport) as http:
            barrier.wait()
            for m in range(requests):
                k = m % len(inputs[c])
                start = time.perf_counter()
                try:
                    action, batch = post(http, inputs[c][k], protocol)
                except Exception as err:
                    errors[c].append(f"{type(err).__name__}: {err}")
                    continue
                latencies[c].append(time.perf_counter() - start)
                batches[c].append(batch)
                if not np.array_equal(action, expected[c][k]):
                    wrong[c] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array([x for per in latencies for x in per]) * 1000
    ok = len(lat)
    all_errors = [e for per in errors for e in per]
    return {"sent": n * requests, "ok": ok, "wrong": sum(wrong), "errors": len(all_errors),
            "first_error": all_errors[0] if all_errors else "", "wall_s": wall, "throughput": ok / wall,
            "p50_ms": float(np.percentile(lat, 50)) if ok else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if ok else float("nan"),
            "mean_batch": float(np.mean([b for per in batches for b in per])) if ok else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a freshly saved tiny model")
    parser.add_argument("--unnorm-key", default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--images-per-client", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224, help="side of the (random) images sent")
    parser.add_argument("--max-batch-size", type=int, default=8, help="for the batching-on run")
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--protocol", choices=["msgpack", "json"], default="msgpack")
    args = parser.parse_args()

    from openvla import VLA

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(tmp))
        vla = VLA.from_pretrained(checkpoint).eval()
        key = vla.resolve_unnorm_key(args.unnorm_key)
        rng = np.random.default_rng(0)
        s = args.image_size
        inputs = [[{"image": rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
                    "instruction": ["open the drawer", "push the button"][(c + k) % 2],
                    **({"unnorm_key": key} if key else {})}
                   for k in range(args.images_per_client)] for c in range(args.clients)]
        n_inputs = args.clients * args.images_per_client
        print(f"computing {n_inputs} expected answers in process ...", flush=True)
        expected = [[np.asarray(vla.predict_action(image=o["image"], instruction=o["instruction"],
                                                   unnorm_key=key)) for o in per] for per in inputs]
        distinct = len({a.tobytes() for per in expected for a in per})
        del vla

        rows = []
        for name, max_batch in (("off", 1), ("on", args.max_batch_size)):
            port = free_port()
            proc = start_server(checkpoint, port, max_batch, args.batch_window_ms, max_queue=4 * args.clients)
            try:
                url = f"http://127.0.0.1:{port}"
                run_clients(url, inputs, expected, 2, args.protocol)  # warm up, batch shapes included
                print(f"batching {name}: {args.clients} clients x {args.requests} requests ...", flush=True)
                result = run_clients(url, inputs, expected, args.requests, args.protocol)
                rows.append((name, max_batch, result))
            finally:
                proc.terminate()
                proc.wait(30)

    print(f"\n{args.clients} clients x {args.requests} requests, {s}x{s} images, {args.protocol}, "
          f"window {args.batch_window_ms:g} ms, {os.cpu_count()} CPUs; {distinct} distinct expected answers "
          f"among {args.clients * args.images_per_client} inputs\n")
    print("| batching | max batch | sent | ok | wrong | errors | wall s | req/s | p50 ms | p99 ms "
          "| mean batch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, max_batch, r in rows:
        print(f"| {name} | {max_batch} | {r['sent']} | {r['ok']} | {r['wrong']} | {r['errors']} | "
              f"{r['wall_s']:.1f} | {r['throughput']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
              f"{r['mean_batch']:.2f} |")
    for name, _, r in rows:
        if r["first_error"]:
            print(f"first error with batching {name}: {r['first_error']}")
    if len(rows) == 2 and rows[0][2]["throughput"] > 0:
        print(f"\nbatching speed-up: {rows[1][2]['throughput'] / rows[0][2]['throughput']:.2f}x")
    failed = any(r["wrong"] or r["errors"] for _, _, r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
