"""Actions per second and latency of every inference path, in one run, on one preset and device.

    python benchmarks/inference.py --preset small            # this CPU
    python benchmarks/inference.py --preset openvla-7b --device cuda --dtype bfloat16

Rows: (a) plain transformers on the same weights, the reference's way: the image through the ViTs' own
forwards, spliced once, then HF's `generate` loop, (b) our static-KV-cache decoding at batch 1 and 8, and
with torch.compile (compiled in warm-up, not timed), (c) OFT parallel decoding with a chunk of
8 (same backbone, L1 head), (d) our decoding with int8 dynamic quantisation of the LLM linears (CPU), (e, f)
bitsandbytes 8-bit and 4-bit NF4 LLM linears (the `quant` extra). Weights are random: speed does not depend
on them; the last column is the share of action tokens (batch 8) that quantisation changes, which on random
weights (near-tied logits) is a worst case, not what a trained model sees (tests/model/test_quantize.py).
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import numpy as np
import torch

from openvla import VLA, get_preset
from openvla.model.quantize import quantize


def _interleaved(fns: list, repeats: int, sync) -> list[list[float]]:
    """Seconds per call of each function, timed round-robin so every row sees the same machine conditions
    (a shared or throttled machine drifts over a run; ratios of sequential blocks would carry the drift)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            sync()
            times[i].append(time.perf_counter() - t)
    return times


def build(preset: str, device: str, dtype: torch.dtype, **overrides) -> VLA:
    cfg = get_preset(preset)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    if preset == "openvla-7b":  # random weights straight on the device; the Llama tokenizer is not needed
        with torch.device(device):
            vla = VLA(cfg)
        return vla.to(dtype).eval()
    return VLA.create(cfg, ["pick up the block"], seed=0).to(device=device, dtype=dtype).eval()


def transformers_features(vla: VLA, pixels: torch.Tensor) -> torch.Tensor:
    """Fused patch features through transformers' own ViT forwards, all blocks run as the reference's timm
    towers do (ours stop at the feature block and skip the modules' per-call machinery)."""
    tower = vla.vision_backbone
    vits = [tower.featurizer, tower.fused_featurizer][:len(tower.configs)]
    feats = [vit(pixels[:, 3 * i:3 * i + 3], output_hidden_states=True).hidden_states[cfg.blocks_run]
             [:, cfg.num_prefix_tokens:] for i, (vit, cfg) in enumerate(zip(vits, tower.configs, strict=True))]
    return torch.cat(feats, dim=-1)


def inputs(vla: VLA, batch: int, device: str):
    size = vla.config.image_size
    pixels = torch.randn(batch, vla.vision_backbone.in_channels * vla.config.num_images, size, size, device=device)
    prompt = [1] + list(range(100, 120)) if vla.tokenizer is None else vla.processor.tokenize("pick up the block")
    ids, mask = vla.pack_prompts([prompt] * batch)
    return ids.to(device), pixels, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    dev = args.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    vla = build(args.preset, dev, dtype)
    dim = vla.config.action_dim
    rows = []
    errors: dict[str, float] = {}  # quantised rows: share of action tokens that differ from float32

    def record(name: str, fn, batch: int, actions_per_call: int) -> None:
        """Warm ``fn`` up (compiling where it compiles) and note its peak memory; timing comes later."""
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            for _ in range(3):
                fn()
            sync()
        peak = (torch.cuda.max_memory_allocated() / 2**30 if dev.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        rows.append([name, fn, batch, actions_per_call, peak])

    ids1, pix1, mask1 = inputs(vla, 1, dev)
    ids8, pix8, mask8 = inputs(vla, 8, dev)

    def hf_generate(ids=ids1, pixels=pix1):
        prefix = vla.projector(transformers_features(vla, pixels))
        splice = getattr(vla, "splice", None) or vla._splice  # named _splice before the heads refactor
        embeds, _, _ = splice(vla.embed_tokens(ids), prefix, None, None)
        out = vla.language_model.generate(inputs_embeds=embeds, max_new_tokens=dim, min_new_tokens=dim,
                                          do_sample=False, pad_token_id=0)
        return out[:, -dim:]

    with torch.inference_mode():
        same = torch.equal(hf_generate(), vla.generate_action_ids(ids1, pix1, mask1, dim))
    print(f"(a) and (b) emit the same action tokens: {same}")

    record("(a) transformers generate", hf_generate, 1, 1)
    record("(b) ours, static KV cache", lambda: vla.generate_action_ids(ids1, pix1, mask1, dim), 1, 1)
    record("(b) ours, static KV cache", lambda: vla.generate_action_ids(ids8, pix8, mask8, dim), 8, 1)
    fast = copy.deepcopy(vla).compile_inference()
    record("(b) ours, static KV cache + torch.compile", lambda: fast.generate_action_ids(ids1, pix1, mask1, dim), 1, 1)
    record("(b) ours, static KV cache + torch.compile", lambda: fast.generate_action_ids(ids8, pix8, mask8, dim), 8, 1)
    oft = build(args.preset, dev, dtype, action_chunk=8, parallel_decoding=True, action_head="l1")
    record("(c) parallel decoding, chunk 8, L1 head", lambda: oft.parallel_decode(ids1, pix1, mask1), 1, 8)
    record("(c) parallel decoding, chunk 8, L1 head", lambda: oft.parallel_decode(ids8, pix8, mask8), 8, 8)
    diffusion = build(args.preset, dev, dtype, action_chunk=8, parallel_decoding=True, action_head="diffusion")
    record(f"(c) parallel decoding, chunk 8, diffusion head ({diffusion.config.diffusion_steps} DDIM passes)",
           lambda: diffusion.parallel_decode(ids1, pix1, mask1), 1, 8)
    oft_fast = copy.deepcopy(oft).compile_inference()
    record("(c) parallel decoding + torch.compile", lambda: oft_fast.parallel_decode(ids1, pix1, mask1), 1, 8)
    reference = vla.generate_action_ids(ids8, pix8, mask8, dim)
    for name, method in (("(d) ours + int8 dynamic (LLM linears)", "int8"), ("(e) ours + bitsandbytes 8-bit", "bnb8"),
                         ("(f) ours + bitsandbytes 4-bit NF4", "bnb4")):
        if method == "int8" and dev != "cpu":
            continue
        try:
            q = quantize(copy.deepcopy(vla), method)
        except ImportError as err:
            print(f"skipping {name}: {err}")
            continue
        record(name, lambda q=q: q.generate_action_ids(ids1, pix1, mask1, dim), 1, 1)
        errors[name] = (q.generate_action_ids(ids8, pix8, mask8, dim) != reference).float().mean().item()
    with torch.inference_mode():
        times = _interleaved([row[1] for row in rows], args.repeats, sync)
    results = []
    for (name, _, batch, per_call, peak), t in zip(rows, times, strict=True):
        p50, p99 = statistics.median(t), float(np.percentile(t, 99))
        results.append((name, batch, per_call * batch / p50, p50 * 1000, p99 * 1000, peak))
    base = results[0][2]
    mem = "peak GPU GiB" if dev.startswith("cuda") else "peak RSS GiB"
    print(f"\npreset {args.preset}, device {dev}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"{args.repeats} timed calls each, interleaved (median)")
    print(f"| path | batch | actions/s | x (a) | p50 ms | p99 ms | {mem} | tokens != float32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, batch, aps, p50, p99, peak in results:
        err = f"{100 * errors[name]:.1f}%" if name in errors else ""
        print(f"| {name} | {batch} | {aps:.1f} | {aps / base:.1f} | {p50:.1f} | {p99:.1f} | {peak:.2f} | {err} |")


if __name__ == "__main__":
    main()
